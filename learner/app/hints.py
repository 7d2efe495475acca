"""``did you mean``: the closest options to an unknown one (difflib)."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence


def subcommand_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of ``command`` (``train``...), or ``parser`` itself if it has none."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def option_hint(parser: argparse.ArgumentParser, argv: Sequence[str], message: str) -> str:
    """``message``, and for each unknown option in it the closest known ones of the
    subcommand (``argv[0]``): ``; did you mean --num-actors?``."""
    if "unrecognized arguments:" not in message or not argv:
        return message
    known = [o for a in subcommand_parser(parser, argv[0])._actions for o in a.option_strings]
    unknown = message.split("unrecognized arguments:", 1)[1].split()
    hints = []
    for token in (t.split("=", 1)[0] for t in unknown if t.startswith("--")):
        close = difflib.get_close_matches(token, known, n=2, cutoff=0.6)
        if close:
            hints.append(f"{token}: did you mean {' or '.join(close)}?")
    return f"{message}; {'; '.join(hints)}" if hints else message

"""Named experiment presets: readable TOML files shipped in ``impala_frodo/config/presets/``.

Each file states where its numbers come from (the report, the FRODO paper,
or our choice). ``impala-frodo presets`` lists them.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from impala_frodo.config.checks import ConfigError
from impala_frodo.config.schema import Config, load_config, merge
from impala_frodo.utils import shorten

PRESET_DIR = Path(__file__).parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


#: Preset families, in the order ``impala-frodo presets`` lists them: (title, name prefix).
FAMILIES = (
    ("Catch", "catch-"),
    ("Random walk", "randomwalk-"),
    ("Gymnasium", "cartpole-"),
    ("MinAtar", "minatar-"),
    ("Atari", "atari-"),
)
#: Families listed one line per algorithm unless all are asked for.
FOLDED = ("atari-",)


def preset_path(name: str) -> Path:
    """The preset's file; :class:`ConfigError` for a name that is not a preset's, with the
    closest names (``did you mean``)."""
    names = preset_names()
    if name not in names:  # a name, never a path: "../x" or a 10,000-character one
        close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ConfigError(
            f"unknown preset {shorten(name)}; {hint}'impala-frodo presets' lists them "
            f"({', '.join(listing(names, full=False)[0][1][:3])}, ...)"
        )
    return PRESET_DIR / f"{name}.toml"


def listing(names: list[str] | None = None, *, full: bool = False) -> list[tuple[str, list[str]]]:
    """``[(family title, [entries])]``: preset names by family, a folded family's (Atari's
    114) as one ``atari-<game>-<algo>`` entry per algorithm unless ``full``."""
    names = preset_names() if names is None else names
    out = []
    for title, prefix in FAMILIES:
        members = [n for n in names if n.startswith(prefix)]
        if members and prefix in FOLDED and not full:
            algos = sorted({n.rsplit("-", 1)[1] for n in members})
            members = [f"{prefix}<game>-{algo}" for algo in algos]
        if members:
            out.append((title, members))
    rest = [n for n in names if not n.startswith(tuple(p for _, p in FAMILIES))]
    return out + ([("Other", rest)] if rest else [])


def folded_summary(entry: str) -> str:
    """What a folded entry (``atari-<game>-frodo``) stands for."""
    prefix, algo = entry.split("<game>-")
    games = [n for n in preset_names() if n.startswith(prefix) and n.endswith(f"-{algo}")]
    example = preset_summary(games[0]).split(" (", 1)[0] if games else ""
    return f"{len(games)} games, e.g. {games[0]}: {example}." if games else ""


def preset_summary(name: str) -> str:
    """The first comment line of the preset file."""
    for line in preset_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def load_preset(name: str) -> Config:
    """The preset's config, which records its name (``Config.preset``)."""
    return merge(load_config(preset_path(name)), {"preset": name})

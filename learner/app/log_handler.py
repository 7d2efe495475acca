"""The ``impala_frodo`` logger on stderr, in lines that do not tear a progress bar."""

from __future__ import annotations

import logging
import sys

from learner.app.args import PROG


class TqdmHandler(logging.Handler):
    """Log lines written with ``tqdm.write``, which redraws the progress bar below them."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # never let logging kill a run
            self.handleError(record)


def setup_logging(level: int = logging.INFO) -> None:
    """Log ``impala_frodo`` at ``level`` through one :class:`TqdmHandler` (once per process)."""
    logger = logging.getLogger("impala_frodo")
    if not any(isinstance(h, TqdmHandler) for h in logger.handlers):
        handler = TqdmHandler()
        handler.setFormatter(logging.Formatter(f"[{PROG}] %(levelname)s %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)

"""Logging for the command line: library code only logs; the CLI decides where it goes."""

from __future__ import annotations

import logging
import sys

__all__ = ["LOG_FORMAT", "configure_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Send every logger's records at ``level`` and above to stderr, one line each."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)

"""The command line every peer script shares."""

from __future__ import annotations

import argparse

# Longer lines are answered in pieces, as portico's built-in handler does.
MAX_LINE = 64 * 1024


def parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--host``, ``--port`` and ``--udp``; callers add their own options."""
    result = argparse.ArgumentParser(description=description)
    result.add_argument("--host", default="127.0.0.1")
    result.add_argument("--port", type=int, required=True)
    result.add_argument("--udp", action="store_true", help="serve datagrams")
    return result

"""What the fuzz targets share: the choice of engine and the command line.

Each target (``fuzz_*.py``) gives its ``run_atheris(libfuzzer_args)`` and
``run_hypothesis(examples, seconds)``; :func:`main` runs atheris when it is
installed (libFuzzer flags and a corpus directory pass through), otherwise,
or with ``--hypothesis``, a Hypothesis run bounded in count and in time.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from typing import Any

__all__ = ["have_atheris", "main", "run_hypothesis"]


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def main(
    argv: list[str],
    *,
    name: str,
    description: str,
    run_atheris: Callable[[list[str]], None],
    run_hypothesis: Callable[[int, float], int],
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--hypothesis", action="store_true", help="use Hypothesis, not atheris")
    parser.add_argument("--examples", type=int, default=100_000, help="Hypothesis: at most")
    parser.add_argument("--seconds", type=float, default=600.0, help="Hypothesis: at most")
    options, libfuzzer_args = parser.parse_known_args(argv)
    if not options.hypothesis and have_atheris():
        run_atheris(libfuzzer_args)
        return 0
    if not options.hypothesis:
        print("atheris is not installed: fuzzing with Hypothesis instead", file=sys.stderr)
    started = time.monotonic()
    checked = run_hypothesis(options.examples, options.seconds)
    elapsed = time.monotonic() - started
    print(f"{name}: {checked} inputs in {elapsed:.1f} s, no failures")
    return 0


_BATCH = 500  # Hypothesis examples between two looks at the clock


def run_hypothesis(
    strategy: Any, check: Callable[[Any], None], examples: int, seconds: float
) -> int:
    """``check`` inputs drawn from ``strategy``: ``examples`` of them, or as many as fit in
    ``seconds``; returns how many were checked."""
    from hypothesis import HealthCheck, Phase, given, settings  # noqa: PLC0415

    counter = [0]

    def batch(size: int) -> None:
        @settings(
            max_examples=size,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def one(value: Any) -> None:
            counter[0] += 1
            check(value)

        one()

    started = time.monotonic()
    while counter[0] < examples and time.monotonic() - started < seconds:
        batch(min(_BATCH, examples - counter[0]))
    return counter[0]

"""The line reader's fuzz target (tests/fuzz/fuzz_line_reader.py) stays runnable and sharp.

It runs for a few seconds in its Hypothesis mode (and in its atheris mode
where atheris is installed), checks a few cases by hand, and must fail
against a handler whose lines are not bounded.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from fuzz_runs import run_briefly

from portico.server import handlers

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
FUZZ_TARGET = ROOT / "tests" / "fuzz" / "fuzz_line_reader.py"


def fuzz_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_line_reader", FUZZ_TARGET)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


FUZZ = fuzz_module()
Case = FUZZ.Case


@pytest.mark.parametrize(
    "case",
    [
        Case(b"", (), 1, -1),
        Case(b"ab\ncd\n", (1,), 3, 1),  # lines at the maximum, a byte at a time
        Case(b"ab\ncde\nf", (2, 5), 3, 7),  # the second is one byte too long
        Case(b"no newline at all", (), 17, 2),  # a last line without its newline, at the limit
        Case(b"x" * 100_000 + b"\n", (65536,), 10, -1),  # far past the maximum, big pieces
        Case(b"ab\ncdefgh\n", (), 4, 4, (("line_size", 100), ("read", 3), ("line", 0))),
        Case(b"abcdefgh\n", (3,), 4, 16, (("line_size", -1),)),  # readline(-1) is bounded
    ],
)
def test_hand_picked_cases_hold(case: object) -> None:
    FUZZ.check(handlers, case)


def test_the_property_fails_on_an_unbounded_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "bounded_lines", lambda rfile, maximum, buffer_size=-1: rfile)
    with pytest.raises(AssertionError, match="past the maximum"):
        FUZZ.check(handlers, Case(b"abcdef\n", (), 4, -1))


def test_the_fuzz_target_runs_for_a_few_seconds(tmp_path: Path) -> None:
    result = run_briefly(FUZZ_TARGET, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no failures" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_the_atheris_mode_runs_for_a_few_seconds(tmp_path: Path) -> None:
    command = [sys.executable, str(FUZZ_TARGET), "-max_total_time=4", str(tmp_path)]
    result = subprocess.run(
        command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=45
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Done" in result.stderr

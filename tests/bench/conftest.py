"""Fixtures for the benchmark harness's own tests: the compiled C programs.

The harness lives in ``bench/`` at the repository root, which ``python -m
pytest`` puts on the path and the bare ``pytest`` script does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.throughput.build import BuildError, build  # noqa: E402


def _built(name: str) -> Path:
    try:
        return build(name)
    except BuildError as exc:
        pytest.skip(f"cannot build {name}: {exc}")


@pytest.fixture(scope="session")
def loadgen() -> Path:
    return _built("loadgen")


@pytest.fixture(scope="session")
def refserver() -> Path:
    return _built("refserver")


@pytest.fixture(scope="session")
def loadgen_tls() -> Path:
    """The load generator built with OpenSSL; skipped (saying why) without libssl-dev."""
    return _built("loadgen-tls")


@pytest.fixture(scope="session")
def refserver_tls() -> Path:
    return _built("refserver-tls")

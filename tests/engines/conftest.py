"""Fixtures of the engine tests: every available engine, and a server on it that must not leak.

``serve(kind="stream")`` starts the conformance handler on the ``engine``
under test (see ``engine_support.py``); a server the test did not stop is
stopped at teardown, and must leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from engine_support import Served, start_served

from portico.engines import available_engines


@pytest.fixture(params=available_engines())
def engine(request: pytest.FixtureRequest) -> str:
    """Every engine that can run here, by name."""
    name: str = request.param
    return name


@pytest.fixture
def serve(engine: str) -> Iterator[Callable[..., Served]]:
    """``serve(kind="stream")``: the conformance handler served on ``engine``."""
    started: list[Served] = []

    def start(kind: str = "stream") -> Served:
        served = start_served(engine, kind)
        started.append(served)
        return served

    yield start
    for served in started:
        if not served.stopping:
            served.stop().assert_clean()

"""The documentation tests: only one at a time may serve on the documented port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from docs_support import documented_port_lock

# The README's run command serves on 127.0.0.1:9999 for the whole test (its bind comes at
# the end of one shell command, after the install), so it holds the port throughout;
# test_quickstart.py takes the same lock around each of its blocks that serve.
WHOLE_TEST_ON_THE_DOCUMENTED_PORT = frozenset({"test_fresh_machine_run_command_serves_upper_case"})


@pytest.fixture(autouse=True)
def _documented_port_taken_in_turn(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.name not in WHOLE_TEST_ON_THE_DOCUMENTED_PORT:
        yield
        return
    with documented_port_lock():
        yield

"""What the feature tests share: a server served in a thread for the length of a test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

JOIN_DEADLINE = 10.0


@pytest.fixture
def serving() -> Iterator[Callable[[Any], Any]]:
    """``serving(server)`` serves it in a thread (0.05 s poll) until the test ends; returns it.

    At the end every server started this way is shut down and closed, and
    its thread joined.
    """
    running: list[tuple[Any, threading.Thread]] = []

    def start(server: Any) -> Any:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        running.append((server, thread))
        return server

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(JOIN_DEADLINE)

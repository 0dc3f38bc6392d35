"""A handler that raises: Exception, a BaseException of its own, GeneratorExit.

``attack_handlers`` answers lines upper-cased and raises on ``raise:NAME``.
For each exception and engine, on a server of its own, a client says
``hello``, asks for the exception, and sends one more line: it gets
``HELLO`` and then its connection closes (never an answer to the line
after).  The server keeps serving: a bystander connection opened before the
failure goes on being answered correctly after it, and a new client is
served.  And it logs the error as the README says handler errors are
logged: on ``portico.error``, with the client's address and a traceback
ending in that exception.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from attack_handlers import RAISES
from attack_support import (
    DEADLINE,
    AttackServer,
    converse_checked,
    pump,
    read_until_closed,
)

pytestmark = pytest.mark.timeout(60)

HERE = Path(__file__).parent
BOUND_MIB = 100
# The first line of a log record (the traceback lines that follow it have no timestamp).
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def logged_error(server: AttackServer, name: str) -> list[str]:
    """The log record of the error ``name``: from its first line to its traceback's last.

    Finds the traceback's last line (the exception) in the whole log, then
    walks back to the record's first line, the one with a timestamp.
    """
    last = server.expect_log(
        rf"^(attack_handlers\.)?{name}: raised on request: {name}", f"{name} was not logged"
    )
    end = server.lines.index(last.string)
    start = next(i for i in range(end, -1, -1) if RECORD.match(server.lines[i]))
    return server.lines[start : end + 1]


@pytest.mark.parametrize("name", list(RAISES))
def test_a_handler_exception_is_isolated(attack_server, engine: str, name: str) -> None:
    handler = "attack_handlers:AsyncRaising" if engine == "async" else "attack_handlers:Raising"
    server: AttackServer = attack_server(engine, handler=handler, pythonpath=HERE)
    with socket.create_connection(server.address, timeout=DEADLINE) as bystander:
        converse_checked(bystander, 20, what="bystander")
        with socket.create_connection(server.address, timeout=DEADLINE) as failing:
            port = failing.getsockname()[1]
            hello = pump(failing, b"hello\n", expect=6).received
            failing.sendall(f"raise:{name}\n".encode() + b"not answered\n")
            rest, _ = read_until_closed(failing)
        assert (hello, rest) == (b"HELLO\n", b""), "answered, then closed at the exception"
        try:
            converse_checked(bystander, 20, what="bystander")  # open across the failure
        except (AssertionError, OSError) as exc:
            raise AssertionError(
                server.explain(f"the connection open across the {name} broke: {exc!r}")
            ) from None
    server.finish(f"handler raises {name}", bound_mib=BOUND_MIB)  # reads the whole log

    record = logged_error(server, name)
    assert "Traceback (most recent call last):" in record, server.explain("no traceback")
    assert " ERROR portico.error: " in record[0] and f":{port}" in record[0], server.explain(
        f"{name} is not logged as a handler error of the client on port {port}: {record[0]!r}"
    )

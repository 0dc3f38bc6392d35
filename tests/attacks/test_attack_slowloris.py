"""Slowloris: 1,000 connections trickling a byte every 0.5-1 s, while a normal client works.

One thread in the test drives every slow connection from a selector
(``attack_support.Trickler``).  With ``--min-receive-rate 100`` over a 2 s
window, each slow connection must send 200 bytes in 2 s and sends 2 to
4: the server closes each about 2 s after its first byte (the log names
min_receive_rate for each), and meanwhile a normal client's conversations are all
answered correctly, some of them while slow connections are still open.
"""

from __future__ import annotations

import socket

import pytest
from attack_support import (
    DEADLINE,
    AttackServer,
    Trickler,
    checked_conversation,
)

pytestmark = pytest.mark.timeout(90)

SLOW = 1000
# The fork engine forks a process per connection, at most 40 at once (ForkingMixIn.
# max_children, which portico serve does not change): 1,000 forked children on 2 cores
# would take the whole suite's time budget, so it gets 100, served in rounds of 40.
SLOW_FORK = 100
# The pool engine holds a worker per connection, 32 here by default: a rate window per
# round of 32 would take about 80 s for 1,000 connections, with the normal client queued
# behind them, by design (docs/engines.md).  Sized for the flood, it meets it as threads do.
POOL_FLAGS = ("--max-workers", str(SLOW + 64))
CUT_DEADLINE = 25.0  # every slow connection closed by then: rounds of 2 s windows, loaded
CONVERSATIONS = 200  # at most, however long the attack lasts
PACE = 0.1  # seconds between the normal client's conversations: it is not a flood
BOUND_MIB = 250  # 1,000 threads' stacks and Python thread states: about 50 MiB here


def test_slowloris(attack_server, engine: str, enough_descriptors) -> None:
    slow = SLOW_FORK if engine == "fork" else SLOW
    enough_descriptors(slow + 512)
    flags = ["--min-receive-rate", "100", *(POOL_FLAGS if engine == "pool" else ())]
    server: AttackServer = attack_server(engine, *flags)

    sockets = [socket.create_connection(server.address, timeout=DEADLINE) for _ in range(slow)]
    try:
        trickler = Trickler(sockets, CUT_DEADLINE)
        trickler.start()
        during = 0  # conversations that ended while slow connections were still open
        for _ in range(CONVERSATIONS):
            checked_conversation(server.address)
            during += trickler.open_count > 0
            if trickler.finished.wait(PACE):  # ends early once the trickle is over
                break
        trickler.join_checked(CUT_DEADLINE)
    finally:
        for sock in sockets:
            sock.close()

    server.finish(
        "slowloris",
        bound_mib=BOUND_MIB,
        slow_connections=slow,
        slow_closed_by_server=len(trickler.closed),
        conversations_during_attack=during,
    )
    assert during >= 1, "no conversation overlapped the attack"
    assert len(trickler.closed) == slow, (
        f"{trickler.open_count} of {slow} slow connections (indexes "
        f"{sorted(set(range(slow)) - set(trickler.closed))[:10]}...) still open after "
        f"{CUT_DEADLINE} s; the server closed {len(trickler.closed)}"
    )
    server.wait_for(r"\(min_receive_rate\)", count=slow)

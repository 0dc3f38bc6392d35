"""Slowloris benchmark: a normal client's latency, without and under 1,000 slowloris connections.

Run from the repository root: ``python -m bench.slowloris``; see ``docs/benchmarks.md``
("Slowloris").  The modules, bottom up:

- ``attacker``: the slowloris connections, from one selector loop in a process of their
  own (``python -m bench.slowloris.attacker``), and the harness's handle on it
- ``client``: the normal client, on one persistent connection or a new one per request
- ``runner``: one server through the sequence (without attack, then under it), with the
  CPU of the server, the client, the attacker and the rest of the machine
- ``report``: the Markdown tables and the plot from a results file
- ``cli``: ``python -m bench.slowloris``

The servers, their start, readiness and stop, the C reference server, the machine's
description and the wait for a quiet machine are ``bench.throughput``'s.
"""

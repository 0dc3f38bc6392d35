"""Throughput benchmark: servers side by side under a C load generator.

Run from the repository root: ``python -m bench.throughput --quick``; see
``bench/throughput/README.md``.  The modules, bottom up:

- ``build``: compiles ``bench/c/*.c`` into ``bench/.build/`` at run time (with OpenSSL
  for the TLS cells: ``loadgen-tls``, ``refserver-tls``)
- ``tls``: the TLS cells' throwaway CA and certificate
- ``workloads``: the cells (a workload at one size and concurrency) and timings
- ``servers``: every server under test, registered by name in one table
- ``procs``: starting a server pinned to its CPU, readiness, memory, stopping
- ``loadgen``: running the C load generator and parsing its result
- ``runner``: one cell against one server, as one result record
- ``results``: the JSON-lines records and the medians over runs
- ``report``: Markdown tables, key ratios and PNG plots from a results file
- ``presets``: named runs (``--preset prefork``, ``--preset tls``)
- ``cli``: ``python -m bench.throughput``
"""

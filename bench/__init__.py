"""portico's benchmarks: run each as ``python -m bench.<name>`` from the repository root.

Benchmarks live apart from the tests and are never run by pytest; see bench/README.md.
"""

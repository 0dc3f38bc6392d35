"""CPython's own socketserver test suite, run against portico.

With ``sys.modules["socketserver"] = portico`` set before the suite imports
it, every test in ``test.test_socketserver`` of the running interpreter runs
on portico's classes.  One test is left out: ``MiscTestCase.test_all`` checks
that the module's classes say ``__module__ == "socketserver"``, which is a
statement about the stdlib file itself; portico's own ``__all__`` is compared
with the stdlib's in ``test_surface.py``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

RUNNER = r"""
import sys, unittest
import portico
sys.modules["socketserver"] = portico
import test.test_socketserver as suite
assert suite.socketserver is portico, suite.socketserver
loader = unittest.TestLoader()
tests = loader.loadTestsFromModule(suite)
def without_all(test_suite):
    kept = unittest.TestSuite()
    for test in test_suite:
        if isinstance(test, unittest.TestSuite):
            kept.addTest(without_all(test))
        elif not test.id().endswith("MiscTestCase.test_all"):
            kept.addTest(test)
    return kept
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(without_all(tests))
print("RESULT", result.testsRun, len(result.failures), len(result.errors))
sys.exit(0 if result.wasSuccessful() else 1)
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    importlib.util.find_spec("test.test_socketserver") is None,
    reason="this interpreter ships without its test package",
)
def test_cpython_socketserver_suite_passes_on_portico(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=110,
        check=False,
    )
    summary = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    runs, failures, errors = map(int, summary[-1].split()[1:])
    assert runs >= 20
    assert (failures, errors) == (0, 0)

"""The README's fresh-machine run command works as written, on a copy of the repository.

It creates a virtual environment, installs portico from the checkout (no
editable install: what a new user gets) and runs ``portico serve``, which must
answer the classic upper-case exchange on 127.0.0.1:9999 and stop cleanly on
SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docs_support import ROOT, copy_of_checkout, fresh_shell_env, wait_for_line


def fresh_machine_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_readme_gives_two_commands_and_ci_runs_the_test_one() -> None:
    run_command, test_command = fresh_machine_commands()[:2]
    assert "portico serve" in run_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command.strip() in ci


@pytest.mark.timeout(240)
@pytest.mark.skipif(sys.platform != "linux", reason="uses the Linux loopback and POSIX signals")
def test_fresh_machine_run_command_serves_upper_case(tmp_path: Path) -> None:
    run_command = fresh_machine_commands()[0]
    checkout = copy_of_checkout(tmp_path / "portico")
    # Run with this interpreter as python3, as a new user's shell would find one.
    env = fresh_shell_env(tmp_path)
    proc = subprocess.Popen(
        ["bash", "-c", run_command],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_line(proc, "serving on 127.0.0.1:9999", time.monotonic() + 200)
        with socket.create_connection(("127.0.0.1", 9999), timeout=10) as client:
            client.sendall(b"hello\n")
            assert client.makefile("rb").readline() == b"HELLO\n"
        # The shell runs the server last in its && chain: signal the whole group we made.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

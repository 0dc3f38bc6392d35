"""docs/quickstart.md works as written: every ```sh block, in order, on a fresh copy.

Each block runs in a ``bash -e -o pipefail`` of its own, from the root of a copy
of the repository (the files git tracks, with their working-tree content: see
``docs_support.copy_of_checkout``), in a new user's environment: this
interpreter as ``python3``, the system's tools, an empty home.  The page itself
is read from the working tree.  A ```text block right after a ```sh block is
what that block prints: its lines must appear, in order, among the lines of the
block's standard output.  A block that starts a server in the background stops
it itself (``kill %1 && wait %1``, so the server's exit status counts too); a
block that leaves any process behind fails, and what it left is killed.  Blocks
that serve take turns with the README's test for 127.0.0.1:9999.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from docs_support import (
    DOCUMENTED_PORT,
    ROOT,
    copy_of_checkout,
    documented_port_lock,
    fenced_blocks,
    fresh_shell_env,
)

QUICKSTART = ROOT / "docs" / "quickstart.md"
INSTALL_SECONDS = 300.0  # a block that runs pip, on a loaded machine
BLOCK_SECONDS = 60.0  # any other block: a server starts, answers and drains in seconds


@dataclass
class Block:
    number: int
    command: str
    output: str | None = None  # the ```text block that follows it: what it prints

    @property
    def serves(self) -> bool:
        """Whether it starts a job in the background (a server)."""
        return re.search(r"&[ \t]*(#.*)?$", self.command, re.M) is not None

    @property
    def seconds(self) -> float:
        return INSTALL_SECONDS if "pip install" in self.command else BLOCK_SECONDS

    def ports(self) -> set[int]:
        """The loopback ports it names (127.0.0.1:9999, ('127.0.0.1', 9999))."""
        found = re.findall(r"127\.0\.0\.1(?::|',\s*)(\d+)", self.command)
        return {DOCUMENTED_PORT, *map(int, found)}


def quickstart_blocks() -> list[Block]:
    blocks: list[Block] = []
    previous = ""
    for info, body in fenced_blocks(QUICKSTART.read_text()):
        if info == "sh":
            blocks.append(Block(len(blocks) + 1, body))
        elif info == "text":
            assert previous == "sh", f"a ```text block must follow a ```sh block: {body!r}"
            blocks[-1].output = body
        previous = info
    return blocks


def test_every_server_the_quickstart_starts_is_stopped_in_the_same_block() -> None:
    blocks = quickstart_blocks()
    assert len(blocks) >= 6
    assert blocks[0].command.strip() == "python3 -m venv .venv && .venv/bin/pip install -e ."
    for block in blocks:
        if block.serves:
            assert block.command.rstrip().endswith("kill %1 && wait %1"), block.command
            assert block.output is not None, f"block {block.number} shows no output to check"


def assert_port_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            pytest.fail(f"127.0.0.1:{port}, which the quickstart serves on, is taken: {exc}")


def kill_what_is_left(group: int) -> bool:
    """SIGKILL what is left in the block's process group; True if anything was."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    os.killpg(group, signal.SIGKILL)
    return True


def run(block: Block, checkout: Path, env: dict[str, str], logs: Path) -> str:
    """Run ``block``; its standard output if it succeeded, else the test fails."""
    out, err = logs / f"{block.number}.out", logs / f"{block.number}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", block.command],
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group, whose id is its pid
        )
    status: int | str
    try:
        status = proc.wait(timeout=block.seconds)
    except subprocess.TimeoutExpired:
        status = f"still running after {block.seconds} s"
    finally:
        left = kill_what_is_left(proc.pid)
        proc.wait(timeout=10)
    report = (
        f"block {block.number}:\n{block.command}\n--- stdout:\n{out.read_text()[-4000:]}"
        f"\n--- stderr:\n{err.read_text()[-4000:]}"
    )
    assert status == 0, f"exit status {status}; {report}"
    assert not left, f"it left a process running; {report}"
    return out.read_text()


def assert_prints(block: Block, stdout: str) -> None:
    assert block.output is not None
    lines = [line.rstrip() for line in stdout.splitlines()]
    position = 0
    for wanted in filter(None, (line.rstrip() for line in block.output.splitlines())):
        assert wanted in lines[position:], (
            f"block {block.number} should print {wanted!r} (after line {position}): {lines}"
        )
        position = lines.index(wanted, position) + 1


@pytest.mark.timeout(1200)
@pytest.mark.skipif(sys.platform != "linux", reason="the quickstart's event engine needs Linux")
def test_the_quickstart_commands_run_as_written(tmp_path: Path) -> None:
    blocks = quickstart_blocks()
    checkout = copy_of_checkout(tmp_path / "portico")
    copied = files_in(checkout)
    env = fresh_shell_env(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    for block in blocks:
        if block.serves:
            with documented_port_lock():
                for port in sorted(block.ports()):
                    assert_port_free(port)
                stdout = run(block, checkout, env, logs)
        else:
            stdout = run(block, checkout, env, logs)
        if block.output is not None:
            assert_prints(block, stdout)
    # The page cleans up after itself: what is left is the copy, the environment and what
    # Python and pip write beside the sources (ignored by git).
    left_behind = sorted(map(str, files_in(checkout) - copied))
    assert left_behind == [], "files the quickstart created and did not remove"


def files_in(checkout: Path) -> set[Path]:
    """The files under ``checkout``, less the environment and what Python and pip write."""
    ignored = {".venv", "__pycache__", "build"}
    found = {path.relative_to(checkout) for path in checkout.rglob("*") if path.is_file()}
    return {
        path
        for path in found
        if not ignored.intersection(path.parts)
        and not any(part.endswith(".egg-info") for part in path.parts)
    }

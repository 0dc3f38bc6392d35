"""portico.testing.ServerProcess: lines with deadlines, signals, exit codes, cleanup."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from portico.testing import ServerProcess

# SIGTERM stays blocked and is taken with sigwait(): a handler plus pause()
# would hang when the signal lands just before pause() starts waiting.
SCRIPT = r"""
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", file=sys.stderr, flush=True)
for line in sys.stdin:
    print("got " + line.strip(), file=sys.stderr, flush=True)
signal.sigwait({signal.SIGTERM})
print("bye", file=sys.stderr, flush=True)
sys.exit(3)
"""


def test_reads_lines_sends_input_and_collects_the_exit_status() -> None:
    with ServerProcess([sys.executable, "-c", SCRIPT], stdin=True) as proc:
        proc.wait_for("ready")
        proc.send_line("one")
        proc.send_line("two")
        assert [m.group(1) for m in proc.wait_for(r"got (\w+)", count=2)] == ["one", "two"]
        proc.popen.stdin.close()  # type: ignore[union-attr]
        assert proc.stop(signal.SIGTERM) == 3
        assert proc.lines[-1] == "bye"


def test_a_line_that_never_comes_times_out_with_the_output_so_far() -> None:
    with ServerProcess([sys.executable, "-c", SCRIPT], stdin=True) as proc:
        proc.wait_for("ready")
        with pytest.raises(TimeoutError, match="ready"):
            proc.read_line(timeout=0.2)


def test_an_early_exit_is_reported_not_waited_for() -> None:
    code = "import sys; print('dying', file=sys.stderr); sys.exit(7)"
    with ServerProcess([sys.executable, "-c", code]) as proc:
        with pytest.raises(AssertionError, match="before 'never'"):
            proc.wait_for("never")
        assert proc.popen.wait(5) == 7


def test_close_kills_and_reaps_a_running_process() -> None:
    proc = ServerProcess([sys.executable, "-c", SCRIPT], stream="stdout")
    proc.close()
    assert proc.popen.returncode == -signal.SIGKILL


def test_waits_only_for_lines_since_a_mark() -> None:
    with ServerProcess([sys.executable, "-c", SCRIPT], stdin=True) as proc:
        proc.send_line("one")
        proc.wait_for("got one")
        mark = len(proc.lines)
        with pytest.raises(TimeoutError, match="no line in time"):
            proc.wait_for(r"got (\w+)", since=mark, timeout=0.2)
        proc.send_line("two")
        assert proc.wait_for(r"got (\w+)", 1, 5.0, since=mark)[0].group(1) == "two"
        with pytest.raises(TimeoutError, match="did not exit"):
            proc.wait(timeout=0.1)


def test_the_other_stream_goes_to_a_file_shown_in_failure_messages(tmp_path: Path) -> None:
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(2)"
    other = tmp_path / "stderr.txt"
    with ServerProcess([sys.executable, "-c", code], stream="stdout", other_path=other) as proc:
        assert proc.read_line() == "to stdout"
        assert proc.read_line() is None
        assert proc.wait() == 2
        assert other.read_text() == "to stderr\n"
        message = proc.explain("what went wrong")
    assert message.startswith(f"what went wrong (pid {proc.pid}, exit status 2)")
    assert message.endswith("its stdout so far:\nto stdout\nits stderr:\nto stderr\n")


def test_drain_reads_a_chatty_process_that_nobody_waits_for() -> None:
    # Far more than a pipe holds: without a reader the process would block on writing.
    code = "import sys\nfor i in range(20000): print(f'line {i:05} ' + 'x' * 50, file=sys.stderr)"
    with ServerProcess([sys.executable, "-c", code], drain=True) as proc:
        assert proc.wait() == 0
        assert proc.wait_for(r"^line 19999 ")
        assert proc.read_line() is None
        assert len(proc.lines) == 20000
    assert proc.popen.stderr is not None
    assert proc.popen.stderr.closed

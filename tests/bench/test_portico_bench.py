"""``portico bench``: finding the harness in a checkout, and passing the options through.

The runs are ``--list`` only (nothing is built or measured): from the checkout,
from one of its subdirectories, from a directory outside any checkout, and
with ``--checkout``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portico.cli import bench
from portico.cli.main import main
from portico.cli.settings import resolve

pytestmark = pytest.mark.timeout(30)

REPO_ROOT = Path(__file__).resolve().parents[2]


def portico_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PORTICO_")}
    return subprocess.run(
        [sys.executable, "-m", "portico", "bench", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def assert_lists_the_matrix(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "servers:" in result.stdout
    assert "c-epoll" in result.stdout
    assert "oneshot-16" in result.stdout


def test_list_from_the_checkout() -> None:
    assert_lists_the_matrix(portico_bench("--list", cwd=REPO_ROOT))


def test_list_from_a_subdirectory_of_the_checkout() -> None:
    assert_lists_the_matrix(portico_bench("--list", cwd=REPO_ROOT / "tests"))


def test_outside_a_checkout_says_where_the_harness_lives(tmp_path: Path) -> None:
    result = portico_bench("--list", cwd=tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("portico: the benchmark is not installed with portico")
    assert "bench/ of a portico source checkout" in lines[0]
    assert "--checkout PATH" in lines[0]
    assert result.stdout == ""


def test_checkout_option_from_outside(tmp_path: Path) -> None:
    assert_lists_the_matrix(portico_bench("--checkout", str(REPO_ROOT), "--list", cwd=tmp_path))


def test_checkout_option_naming_no_checkout(tmp_path: Path) -> None:
    result = portico_bench("--checkout", str(tmp_path), "--list", cwd=REPO_ROOT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"portico: --checkout {tmp_path}: not a portico checkout (no "
        "bench/throughput/__main__.py next to a pyproject.toml naming portico)"
    ]


def test_the_harness_exit_status_comes_through() -> None:
    result = portico_bench("--workloads", "nosuch", cwd=REPO_ROOT)
    assert result.returncode == 2
    assert "unknown workload nosuch" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--duration", "0"], "--duration: '0' is not a positive number of seconds"),
        (["--warmup", "-1"], "--warmup: '-1' is negative"),
        (["--runs", "two"], "--runs: 'two' is not a whole number"),
        (["--workloads", "oneshot,,udp"], "is not a list of names"),
        (["--servers", "a", "b"], "unrecognized arguments: b"),
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *args]) == 2
    assert fragment in capsys.readouterr().err


def test_options_pass_through(tmp_path: Path) -> None:
    parsed = {
        "quick": True,
        "workloads": ["oneshot,udp", "bulk"],
        "servers": ["c-epoll"],
        "duration": "1.5",
        "warmup": "0",
        "runs": "2",
        "out": "results.jsonl",
        "no_plots": True,
    }
    resolved = resolve(bench.SETTINGS, parsed, {})
    assert bench.harness_argv(dict(resolved.values)) == [
        "--quick",
        "--no-plots",
        "--workloads",
        "oneshot",
        "udp",
        "bulk",
        "--servers",
        "c-epoll",
        "--duration",
        "1.5",
        "--warmup",
        "0",
        "--runs",
        "2",
        "--out",
        str(Path.cwd() / "results.jsonl"),
    ]
    assert bench.harness_argv(dict(resolve(bench.SETTINGS, {}, {}).values)) == []


def test_the_prefork_preset_passes_through() -> None:
    resolved = resolve(bench.SETTINGS, {"preset": "prefork", "share_cpus": True}, {})
    assert bench.harness_argv(dict(resolved.values)) == ["--share-cpus", "--preset", "prefork"]


def test_find_checkout(tmp_path: Path) -> None:
    assert bench.find_checkout(REPO_ROOT / "bench" / "throughput") == REPO_ROOT
    other = tmp_path / "other"
    (other / "bench" / "throughput").mkdir(parents=True)
    (other / "bench" / "throughput" / "__main__.py").write_text("")
    (other / "pyproject.toml").write_text('[project]\nname = "not-portico"\n')
    assert bench.find_checkout(other) is None
    (other / "pyproject.toml").write_text('[project]\nname = "portico"\n')
    assert bench.find_checkout(other / "bench") == other

"""``portico serve --metrics``: Prometheus text, scraped for real, one process and prefork.

Under ``--workers`` the figures must cover every worker: the scrape has one
series per worker (label ``worker``, its pid), and their sum is every
request the clients made.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
from conversations import DEADLINE, converse, free_port

prometheus_parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.timeout(40)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Each sample's name -> [(labels, value)]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=DEADLINE) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in prometheus_parser.text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def scraped_until(port: int, name: str, expected: float) -> dict:  # type: ignore[type-arg]
    """Scrape until ``name`` sums to ``expected`` (workers publish at each heartbeat)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        samples = scrape(port)
        if total(samples, name) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


@pytest.mark.parametrize("workers", [None, "2"])
def test_a_scrape_counts_every_request(portico_serve, workers) -> None:
    metrics = free_port()
    extra = ["--workers", workers] if workers else []
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--metrics", f"127.0.0.1:{metrics}", *extra
    )
    address = server.addresses[0]
    for n in range(20):
        assert converse(address, [b"n%d\n" % n]) == [b"N%d\n" % n]
    samples = scraped_until(metrics, "portico_connections_accepted_total", 20)
    assert total(samples, "portico_connections_accepted_total") == 20
    assert total(samples, "portico_received_bytes_total") == sum(
        len(b"n%d\n" % n) for n in range(20)
    )
    assert total(samples, "portico_handler_duration_seconds_count") == 20
    if workers:
        pids = {labels["worker"] for labels, _ in samples["portico_connections_accepted_total"]}
        assert len(pids) == 2  # one series per worker
    assert server.stop() == 0


def test_metrics_and_health_may_share_an_address(portico_serve) -> None:
    port = free_port()
    server = portico_serve(
        "upper", "--bind", "127.0.0.1:0", "--workers", "2",
        "--metrics", f"127.0.0.1:{port}", "--health", f"127.0.0.1:{port}",
    )  # fmt: skip
    deadline = time.monotonic() + DEADLINE
    while len(scrape(port).get("portico_connections_active", [])) < 2:  # both workers published
        assert time.monotonic() < deadline, "the workers never published their figures"
        time.sleep(0.1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=DEADLINE) as reply:
        assert reply.read() == b"ok\n"
    assert server.stop() == 0

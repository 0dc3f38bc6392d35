"""Prometheus metrics from ``server.statistics()``, for ``portico serve --metrics``.

The text format is made by the well-kept ``prometheus_client`` package (the
``metrics`` extra: ``pip install 'portico[metrics]'``), from snapshots: one
server's, or under prefork one per worker, labelled ``worker`` with its pid,
so that every worker's figures are there and a replaced worker's counters
start a new series, as Prometheus expects of a restarted process.

Under prefork the workers publish their snapshot (JSON, replaced atomically)
into a directory the master owns, at every heartbeat and once more when
they stop; the master reads them when scraped.  Nothing is shared in memory
and the master starts no thread.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from portico.errors import ConfigurationError
from portico.server.statistics import ServerStatistics

__all__ = ["MetricsRoute", "publish_statistics", "read_statistics", "render", "snapshot_dict"]

Snapshot = dict[str, Any]
Labelled = tuple[dict[str, str], Snapshot]

_MAPPINGS = {
    "rejected": ("connections_rejected", "connections turned away, by admission limit", "limit"),
    "closed_by_limit": (
        "connections_closed_by_limit",
        "connections closed by a time or size limit, by limit",
        "limit",
    ),
    "accept_errors": ("accept_errors", "failed accept() calls, by error", "error"),
}


def snapshot_dict(stats: ServerStatistics) -> Snapshot:
    """The snapshot as plain JSON-able data."""
    data: Snapshot = {}
    for field in fields(stats):
        value = getattr(stats, field.name)
        if field.name in _MAPPINGS:
            value = dict(value)
        elif is_dataclass(value):
            value = asdict(value)  # type: ignore[arg-type]
        data[field.name] = value
    return data


def publish_statistics(directory: str, server: Any) -> None:
    """Write this process's snapshot where the master reads it (atomically: write, rename)."""
    path = Path(directory, f"{os.getpid()}.json")
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(snapshot_dict(server.statistics()), default=str))
    partial.replace(path)


def read_statistics(directory: str, pids: Iterable[int]) -> list[Labelled]:
    """The snapshots the workers ``pids`` published (a worker that has not yet: none)."""
    found = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ValueError):
            snapshot = json.loads(Path(directory, f"{pid}.json").read_text())
            found.append(({"worker": str(pid)}, snapshot))
    return found


def render(snapshots: list[Labelled]) -> bytes:
    """The Prometheus text format of ``snapshots``."""
    client = _client()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshots, client))
    data: bytes = client.generate_latest(registry)
    return data


class MetricsRoute:
    """``GET /metrics`` for a health listener: ``snapshots()`` at each scrape."""

    def __init__(self, snapshots: Any) -> None:
        self.content_type = _client().CONTENT_TYPE_LATEST
        self._snapshots = snapshots

    def __call__(self) -> tuple[int, str, str, bytes]:
        return 200, "OK", self.content_type, render(self._snapshots())


def _client() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - an optional extra
        import prometheus_client.core  # noqa: PLC0415 - the metric families
    except ImportError:
        raise ConfigurationError(
            "--metrics needs the prometheus_client package: pip install 'portico[metrics]'"
        ) from None
    return prometheus_client


class _Collector:
    """prometheus_client's collector protocol over a fixed list of snapshots."""

    def __init__(self, snapshots: list[Labelled], client: Any) -> None:
        self.snapshots = snapshots
        self.core = client.core

    def collect(self) -> Iterator[Any]:
        core, keys = self.core, sorted({key for labels, _ in self.snapshots for key in labels})
        counters = {
            "accepted": ("connections_accepted", "connections (or datagrams) handed to the engine"),
            "bytes_in": ("received_bytes", "bytes received from clients"),
            "bytes_out": ("sent_bytes", "bytes sent to clients"),
        }
        for field, (name, text) in counters.items():
            family = core.CounterMetricFamily(f"portico_{name}", text, labels=keys)
            for labels, snapshot in self.snapshots:
                family.add_metric(_values(labels, keys), snapshot[field])
            yield family
        active = core.GaugeMetricFamily(
            "portico_connections_active", "handed over and not finished", labels=keys
        )
        for labels, snapshot in self.snapshots:
            active.add_metric(_values(labels, keys), snapshot["active"])
        yield active
        yield from self._by_name(keys)
        yield self._histogram(keys)
        yield from self._engine(keys)

    def _by_name(self, keys: list[str]) -> Iterator[Any]:
        for field, (name, text, label) in _MAPPINGS.items():
            family = self.core.CounterMetricFamily(f"portico_{name}", text, labels=[*keys, label])
            for labels, snapshot in self.snapshots:
                for which, count in sorted(snapshot[field].items()):
                    family.add_metric([*_values(labels, keys), which], count)
            yield family

    def _histogram(self, keys: list[str]) -> Any:
        family = self.core.HistogramMetricFamily(
            "portico_handler_duration_seconds", "how long handlers ran", labels=keys
        )
        for labels, snapshot in self.snapshots:
            histogram = snapshot["handler_seconds"]
            running, buckets = 0, []
            for bound, count in zip(
                [*histogram["bounds"], float("inf")], histogram["counts"], strict=True
            ):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric(_values(labels, keys), buckets, histogram["total"])
        return family

    def _engine(self, keys: list[str]) -> Iterator[Any]:
        """Every number of the engine's own snapshot, as a gauge (pool saturation, ...)."""
        names = sorted(
            {
                name
                for _, snapshot in self.snapshots
                for name, value in (snapshot.get("engine") or {}).items()
                if isinstance(value, (int, float)) and not isinstance(value, bool)
            }
        )
        for name in names:
            family = self.core.GaugeMetricFamily(
                f"portico_engine_{name}", f"the engine's {name.replace('_', ' ')}", labels=keys
            )
            for labels, snapshot in self.snapshots:
                value = (snapshot.get("engine") or {}).get(name)
                if isinstance(value, (int, float)):
                    family.add_metric(_values(labels, keys), value)
            yield family


def _values(labels: dict[str, str], keys: list[str]) -> list[str]:
    return [labels.get(key, "") for key in keys]

"""Admission: how many connections a server keeps open, per client, and how fast it takes new ones.

Three limits, each off (None) unless set:

- ``max_connections``: connections open at once.  ``"auto"`` derives it
  from the process's descriptor limit (``RLIMIT_NOFILE``), keeping a reserve
  for listeners, logs and the engine's own descriptors, so that the server
  stops accepting before ``accept()`` runs out of descriptors.
- ``max_connections_per_client``: connections open at once from one client
  address, or one network: ``client_prefix`` gives the prefix lengths
  (IPv4, IPv6) that make two addresses "one client".
- ``max_accept_rate``: new connections per second (a token bucket holding
  one second's worth, at least one).

When a limit is reached, ``overload_policy`` says what happens: ``"pause"``
(the default) stops accepting until a slot frees or a token accrues, and
new clients wait in the kernel's backlog; ``"reject"`` accepts them and
hands each to the server's ``handle_overload()`` hook, which may write a
short "busy" reply before the connection is closed.  The per-client limit
always rejects: a server cannot stop accepting for one client only.

A connection holds its slot from the accept until ``close_request()``; a
forked child holds it until it is reaped.  :class:`Admission` is
thread-safe: slots are taken in the serving loop and freed wherever a
request ends.
"""

from __future__ import annotations

import ipaddress
import os
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from portico.errors import ConfigurationError

__all__ = [
    "OVERLOAD_POLICIES",
    "Admission",
    "AdmissionLimits",
    "auto_max_connections",
    "client_key",
]

OVERLOAD_POLICIES = ("pause", "reject")

# Why a connection was turned away: the name of the limit it met.
MAX_CONNECTIONS = "max_connections"
PER_CLIENT = "max_connections_per_client"
ACCEPT_RATE = "max_accept_rate"

MaxConnections = int | Literal["auto"] | None


def auto_max_connections() -> int:
    """The connections this process can hold open: its descriptor limit, less a reserve.

    Less the descriptors open now (listeners, the engine's loop, log files:
    an asyncio loop alone holds a dozen), and a reserve for what opens
    later (a quarter of the limit, at most 64: a handler's file or database
    connection, a log file rotated).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - _open_descriptors() - min(64, soft // 4))


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
    except OSError:
        return 0  # not Linux: the reserve alone


def client_key(client_address: Any, prefix: tuple[int, int]) -> Any:
    """What identifies a client for the per-client limit: its network, at ``prefix`` length.

    IPv4-mapped IPv6 addresses count as IPv4.  None for a peer without an IP
    address (a Unix socket's): such peers are not limited per client.
    """
    if not isinstance(client_address, tuple) or not client_address:
        return None
    try:
        address = ipaddress.ip_address(str(client_address[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    length = prefix[0] if address.version == 4 else prefix[1]
    return ipaddress.ip_network((address, length), strict=False)


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits of one server, read from its attributes; see the module's docstring."""

    max_connections: int | None = None
    per_client: int | None = None
    client_prefix: tuple[int, int] = (32, 128)
    accept_rate: float | None = None
    policy: str = "pause"

    def __post_init__(self) -> None:
        for name, value in (
            ("max_connections", self.max_connections),
            ("max_connections_per_client", self.per_client),
            ("max_accept_rate", self.accept_rate),
        ):
            if value is not None and (not isinstance(value, (int, float)) or not value > 0):
                raise ConfigurationError(f"{name} must be positive, or None for no limit")
        if self.policy not in OVERLOAD_POLICIES:
            raise ConfigurationError(
                f"overload_policy must be pause or reject, not {self.policy!r}"
            )
        v4, v6 = self.client_prefix
        if not (0 <= v4 <= 32 and 0 <= v6 <= 128):
            raise ConfigurationError(f"client_prefix {self.client_prefix} is not (0-32, 0-128)")

    @classmethod
    def of(cls, server: Any) -> AdmissionLimits:
        maximum: MaxConnections = getattr(server, "max_connections", None)
        return cls(
            max_connections=auto_max_connections() if maximum == "auto" else maximum,
            per_client=getattr(server, "max_connections_per_client", None),
            client_prefix=tuple(getattr(server, "client_prefix", (32, 128))),
            accept_rate=getattr(server, "max_accept_rate", None),
            policy=getattr(server, "overload_policy", "pause"),
        )

    @property
    def active(self) -> bool:
        return (self.max_connections, self.per_client, self.accept_rate) != (None, None, None)

    @property
    def pauses(self) -> bool:
        return self.policy == "pause"


class Admission:
    """The open connections of one server, counted against its :class:`AdmissionLimits`."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self.open = 0
        self.rejected: Counter[str] = Counter()
        self._per_client: Counter[Any] = Counter()
        self._slots: dict[int, Any] = {}  # id(request) -> its client key
        self._lock = threading.Lock()
        rate = limits.accept_rate
        self._burst = 0.0 if rate is None else max(1.0, rate)
        self._tokens = self._burst
        self._refilled = time.monotonic()

    @property
    def full(self) -> bool:
        """Whether ``max_connections`` are open: a pausing server stops accepting."""
        maximum = self.limits.max_connections
        return maximum is not None and self.open >= maximum

    def admit(self, request: Any, client_address: Any) -> str | None:
        """Take a slot for ``request``; or the name of the limit that refuses it."""
        limits = self.limits
        key = (
            None if limits.per_client is None else client_key(client_address, limits.client_prefix)
        )
        with self._lock:
            refused = self._refusal(key)
            if refused is not None:
                self.rejected[refused] += 1
                return refused
            if limits.accept_rate is not None:
                self._tokens -= 1.0
            self.open += 1
            if key is not None:
                self._per_client[key] += 1
            self._slots[id(request)] = key
            return None

    def _refusal(self, key: Any) -> str | None:
        limits = self.limits
        if self.full:
            return MAX_CONNECTIONS
        if key is not None and self._per_client[key] >= limits.per_client:  # type: ignore[operator]
            return PER_CLIENT
        if limits.accept_rate is not None and self._refill(time.monotonic()) < 1.0:
            return ACCEPT_RATE
        return None

    def _refill(self, now: float) -> float:
        rate = self.limits.accept_rate or 0.0
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        return self._tokens

    def accept_delay(self) -> float:
        """Seconds until the accept rate allows another connection (0.0: now)."""
        rate = self.limits.accept_rate
        if rate is None:
            return 0.0
        with self._lock:
            missing = 1.0 - self._refill(time.monotonic())
        return max(0.0, missing / rate)

    def detach(self, request: Any) -> Any:
        """Take ``request``'s slot away from it, to free later with :meth:`free` (a forked child).

        Returns a token, or None if ``request`` held no slot.
        """
        with self._lock:
            if id(request) not in self._slots:
                return None
            return _Slot(self._slots.pop(id(request)))

    def release(self, request: Any) -> bool:
        """``request`` ended: free its slot.  True if that reopened a full server."""
        with self._lock:
            if id(request) not in self._slots:
                return False
            return self._free(self._slots.pop(id(request)))

    def free(self, token: Any) -> bool:
        """Free a slot taken away by :meth:`detach`.  True if that reopened a full server."""
        with self._lock:
            return self._free(token.key)

    def _free(self, key: Any) -> bool:
        was_full = self.full
        self.open -= 1
        if key is not None:
            self._per_client[key] -= 1
            if not self._per_client[key]:
                del self._per_client[key]
        return was_full and not self.full


class _Slot:
    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

"""Prefork: one master process, many worker processes serving the same sockets.

See :class:`Supervisor`; ``portico serve --workers N`` is built on it.
"""

from portico.prefork.supervisor import EXIT_WORKER_BOOT, Supervisor, WorkerBootError

__all__ = ["EXIT_WORKER_BOOT", "Supervisor", "WorkerBootError"]

"""Logging for the command line: library code only logs; the CLI decides where it goes.

Text (the default) is one line per record, with ``[connection N PEER]``
when the record was made while a connection was served; JSON
(``--log-format json``) is one object per line with the same fields, and the
access line's own (``access``: client, proxy, TLS version, bytes, duration,
how it ended).  The access log's level is set apart from the rest
(``--access-log-level``), so that an operator can keep warnings and drop the
line per connection, or the reverse.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from portico.net.context import ConnectionFilter

__all__ = ["LOG_FORMAT", "LOG_FORMATS", "JSONFormatter", "TextFormatter", "configure_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
ACCESS_LOGGER = "portico.access"


class TextFormatter(logging.Formatter):
    """LOG_FORMAT, then the connection the record was made for, if any."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        connection = getattr(record, "connection_id", None)
        if connection is None or record.name == ACCESS_LOGGER:
            return text  # the access line names its connection itself
        return f"{text} [connection {connection} {record.peer}]"  # type: ignore[attr-defined]


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, connection, access fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        connection = getattr(record, "connection_id", None)
        if connection is not None:
            entry["connection_id"] = connection
            entry["peer"] = getattr(record, "peer", None)
        access = getattr(record, "access", None)
        if access is not None:
            entry["access"] = access
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    level: str, log_format: str = "text", access_level: str | None = None
) -> None:
    """Send every logger's records at ``level`` and above to stderr, one line each.

    ``access_level``: the access log's own level (None: ``level``; ``OFF``: no access lines).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ConnectionFilter())
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    access = logging.getLogger(ACCESS_LOGGER)
    if access_level is None:
        access.setLevel(logging.NOTSET)
    elif access_level == "OFF":
        access.setLevel(logging.CRITICAL + 1)
    else:
        access.setLevel(access_level)

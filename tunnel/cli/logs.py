"""Logging set-up for the CLI: levels from -v/-q or config, text or JSON lines on stderr.

A record is one line. A traceback attached to one (asyncio's "Exception in callback", a
library's `log.exception`) shows in full only at debug level (-v); otherwise the line ends
with the exception's type and message and a pointer to -v.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
DETAILS_HINT = "run with -v for details"
PACKETS_LOGGER = "ptunnel.packets"  # per-datagram detail (tunnel.node.node), shown at -vv only


def one_line(text: str) -> str:
    return " ".join(text.split())


def exception_summary(exc: BaseException | None) -> str:
    """`ValueError: what it said`, on one line."""
    if exc is None:
        return ""
    said = one_line(str(exc)).rstrip(".")
    return f"{type(exc).__name__}: {said}" if said else type(exc).__name__


class TextFormatter(logging.Formatter):
    """`time level logger: message`; tracebacks only when `details` (debug level)."""

    def __init__(self, details: bool) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
        self.details = details

    def format(self, record: logging.LogRecord) -> str:
        if self.details or not record.exc_info:
            return super().format(record)
        exc = record.exc_info[1]
        short = logging.makeLogRecord({**vars(record), "exc_info": None, "exc_text": None})
        short.msg, short.args = (f"{one_line(record.getMessage())}: "
                                 f"{exception_summary(exc)} ({DETAILS_HINT})"), None
        return super().format(short)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra=` fields kept as keys (for log shippers); a
    traceback only when `details` (debug level), else the exception's type and message."""

    def __init__(self, details: bool) -> None:
        super().__init__()
        self.details = details

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | str | bool) else str(value)
        if record.exc_info:
            entry["exc"] = (self.formatException(record.exc_info) if self.details
                            else exception_summary(record.exc_info[1]))
        return json.dumps(entry)


def setup_logging(level: str, fmt: str, packets: bool = False) -> None:
    """Log `level` and up to stderr; `packets` (-vv) adds a line per datagram (PACKETS_LOGGER),
    which debug level (-v) alone leaves out."""
    handler = logging.StreamHandler(sys.stderr)
    details = LEVELS[level] <= logging.DEBUG
    handler.setFormatter(JsonFormatter(details) if fmt == "json" else TextFormatter(details))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    logging.getLogger(PACKETS_LOGGER).setLevel(logging.DEBUG if packets else logging.INFO)

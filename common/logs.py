"""Structured logs for workers and relays: one line per event, with the event's fields.

A call site names its event and passes fields through `extra=fields(...)`:

    log.info("job started", extra=fields(job=job_id, epoch=0, model="tiny"))

`text` renders `2026-11-21T10:00:00.123Z INFO genq.jobs: job started job=3f… epoch=0 …`;
`json` renders one object a line (`ts`, `level`, `logger`, `event`, the fields). Every line
of a process also names it: `worker` (the Celery node name) or `relay` (`relay@host:pid`).

Nothing here logs a prompt; call sites keep prompts out of their fields. As a last guard,
a password in any URL of a line (`redis://user:secret@host`) is masked before it is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Literal

FIELDS = "genq_fields"  # the LogRecord attribute `fields()` sets
LogFormat = Literal["text", "json"]

# user:password@ in a URL, and ?password= (?sentinel_password=): masked in every line.
# The password runs to the last @ before the host: redis-py takes an unencoded @ as part of it.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^\s/]+(?=@)", re.I)
QUERY_PASSWORD = re.compile(r"([?&](?:sentinel_)?password=)[^&#\s]*", re.I)
_BARE = re.compile(r"^[^\s=\"]+$")


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: the event's fields, rendered after its message."""
    return {FIELDS: values}


def mask_secrets(line: str) -> str:
    if "://" not in line and "password" not in line.lower():  # most lines: no regex run
        return line
    return QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\g<head>***", line))


class EventFormatter(logging.Formatter):
    """Renders a record as one line, text or JSON, with its fields and the process's."""

    def __init__(self, fmt: LogFormat, context: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.format_name = fmt
        self.context = dict(context or {})  # e.g. worker: the same on every line

    def format(self, record: logging.LogRecord) -> str:
        values: dict[str, Any] = dict(getattr(record, FIELDS, None) or {})
        task_id = getattr(record, "task_id", None)  # Celery's task logger sets it
        if task_id and task_id != "???":
            values.setdefault("task", task_id)
        for key, value in self.context.items():
            values.setdefault(key, value)
        error = self.formatException(record.exc_info) if record.exc_info else None
        if self.format_name == "json":
            line = self._json(record, values, error)
        else:
            line = self._text(record, values, error)
        return mask_secrets(line)

    @staticmethod
    def _timestamp(record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def _json(self, record: logging.LogRecord, values: dict[str, Any], error: str | None) -> str:
        event = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage().strip(),
            **values,
        }
        if error is not None:
            event["error"] = error
        return json.dumps(event, default=str, ensure_ascii=False)

    def _text(self, record: logging.LogRecord, values: dict[str, Any], error: str | None) -> str:
        pairs = [f"{key}={_text_value(value)}" for key, value in values.items()]
        if error is not None:
            pairs.append(f"error={_text_value(error)}")
        message = record.getMessage().strip().replace("\n", "\\n")  # one line an event
        line = f"{self._timestamp(record)} {record.levelname} {record.name}: {message}"
        return " ".join([line, *pairs])


def _text_value(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if _BARE.match(text) else json.dumps(text, ensure_ascii=False)


def use_formatter(logger: logging.Logger, fmt: LogFormat, context: dict[str, Any]) -> None:
    """Render every handler of `logger` (Celery's, once it has set them up) as events."""
    for handler in logger.handlers:
        handler.setFormatter(EventFormatter(fmt, context))


def configure(fmt: LogFormat, context: dict[str, Any], level: int = logging.INFO) -> None:
    """For processes that set up logging themselves (the relay): one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EventFormatter(fmt, context))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)

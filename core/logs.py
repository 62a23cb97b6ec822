"""Optional JSON logs (LETHE_LOG_JSON=true): one object per line, with the job id on every line a job logs
and the request id on every line an API request logs."""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("lethe_job_id", default=None)
current_request: contextvars.ContextVar[str | None] = contextvars.ContextVar("lethe_request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job_id": current_job.get(),
            "request_id": current_request.get(),
            "process": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def use_json_logs(logger: logging.Logger | None = None) -> None:
    """Give every handler of the logger (default: root) the JSON formatter; add one if it has none."""
    target = logger or logging.getLogger()
    if not target.handlers:
        target.addHandler(logging.StreamHandler())
    for handler in target.handlers:
        handler.setFormatter(JsonFormatter())

"""Keep API keys out of log lines, even when a client puts one in a URL that the access log writes out."""

from __future__ import annotations

import logging
import re

KEY = re.compile(r"lethe_[A-Za-z0-9_-]{4,}")
KEY_PARAM = re.compile(r"([?&](?:key|api_key)=)[^&\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    """The text with every API key and every key= query value replaced."""
    return KEY.sub("lethe_" + REDACTED, KEY_PARAM.sub(r"\1" + REDACTED, text))


class RedactKeys(logging.Filter):
    """Rewrites a record's message and string arguments before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def redact_keys_in_logs() -> None:
    """Attach the filter to the server's loggers, once each (the access log writes the whole URL)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())

"""JSON log lines carry the job id of the job that logged them."""

from __future__ import annotations

import json
import logging

from core.logs import JsonFormatter, current_job


def test_json_lines_carry_the_job_id():
    record = logging.LogRecord("worker", logging.INFO, __file__, 1, "epoch %d done", (3,), None)
    token = current_job.set("job-123")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        current_job.reset(token)
    assert line["job_id"] == "job-123" and line["message"] == "epoch 3 done" and line["level"] == "INFO"
    assert json.loads(JsonFormatter().format(record))["job_id"] is None

"""`lethe jobs` against the real API over HTTP (embedded default): filters, ids by prefix, progress lines."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.db import session_scope
from core.jobs import claim, report_progress, succeed
from core.tables import Job, JobStatus
from tests.client import serve
from tests.conftest import REPO
from tests.utils import add_ready_model, configure, new_key, reset_caches

AMBIGUOUS = ("0123abcd-0000-4000-8000-000000000001", "0123abcd-0000-4000-8000-000000000002")


@dataclass(frozen=True)
class Server:
    url: str
    key: str
    ids: dict[str, str]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """The API on SQLite with an evaluation and its run, a training, a queued job, and two look-alike ids."""
    from core.migrate import upgrade
    from core.settings import get_settings

    configure(monkeypatch, home=tmp_path / "home", maintenance_seconds=0, rate_limit="100000/minute")
    get_settings().ensure_dirs()
    upgrade(get_settings().db_url)
    with session_scope() as session:
        m1, m2 = add_ready_model(session, "m1"), add_ready_model(session, "m2")
        done = {"status": JobStatus.succeeded, "progress": 1.0, "tenant_id": "local"}
        evaluate = Job(kind="evaluate", model_id=m1.id, **done)
        session.add(evaluate)
        session.flush()
        rows = {
            "evaluate": evaluate,
            "run": Job(kind="unlearn_run", model_id=m1.id, parent_id=evaluate.id, **done),
            "train": Job(kind="train", model_id=m2.id, **done),
            "queued": Job(kind="unlearn", model_id=m1.id, status=JobStatus.queued, tenant_id="local"),
            "twin1": Job(id=AMBIGUOUS[0], kind="logits", model_id=m2.id, **done),
            "twin2": Job(id=AMBIGUOUS[1], kind="logits", model_id=m2.id, **done),
        }
        session.add_all(rows.values())
        session.flush()
        ids = {name: job.id for name, job in rows.items()} | {"m1": m1.id}
    key = new_key("local")
    with serve() as url:
        yield Server(url, key, ids)
    reset_caches()


def lethe(server: Server, *args: str, columns: str | None = "200"):
    runner = CliRunner(env={"LETHE_URL": server.url, "LETHE_API_KEY": server.key, "COLUMNS": columns})
    return runner.invoke(app, list(args))


def listed(server: Server, *args: str) -> list[str]:
    result = lethe(server, "jobs", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return [job["id"] for job in json.loads(result.stdout)]


def one_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_jobs_list_hides_runs_unless_all_and_filters_by_status_kind_and_model(server):
    ids = server.ids
    top = set(listed(server))
    assert top == {ids[n] for n in ("evaluate", "train", "queued", "twin1", "twin2")}
    assert set(listed(server, "--all")) == top | {ids["run"]}
    assert listed(server, "--status", "queued") == [ids["queued"]]
    assert listed(server, "--kind", "train") == [ids["train"]]
    assert set(listed(server, "--model", "m1")) == {ids["evaluate"], ids["queued"]}
    assert set(listed(server, "--model", ids["m1"], "--all", "--status", "succeeded")) == {
        ids["evaluate"],
        ids["run"],
    }
    assert len(listed(server, "--limit", "2")) == 2
    assert "model 'nope' not found" in one_error(lethe(server, "jobs", "list", "--model", "nope"), 1)
    assert "status" in one_error(lethe(server, "jobs", "list", "--status", "done"), 1)

    hidden = lethe(server, "jobs", "list").stdout
    assert ids["run"] not in hidden and "--all also lists the runs" in hidden
    every = lethe(server, "jobs", "list", "--all").stdout
    row = next(line for line in every.splitlines() if ids["run"] in line)
    assert ids["evaluate"][:8] in row  # the parent column, by the short id the commands accept


def test_a_job_is_found_by_any_unique_prefix_of_8_characters_or_more(server):
    ids = server.ids
    for ref in (ids["run"][:8], ids["run"][:13].upper(), ids["run"], ids["run"].upper()):
        shown = lethe(server, "jobs", "show", ref, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["id"] == ids["run"]
        assert json.loads(shown.stdout)["parent_id"] == ids["evaluate"]
    cancelled = lethe(server, "jobs", "cancel", ids["queued"][:8], "--json")
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout) | {"id": ids["queued"], "status": "cancelled"} == json.loads(
        cancelled.stdout
    )
    waited = lethe(server, "jobs", "wait", ids["train"][:10])
    assert waited.exit_code == 0, waited.output
    assert f"job {ids['train']}" in waited.stdout and "succeeded" in waited.stdout


def test_short_ambiguous_and_unknown_prefixes_are_one_clear_error(server):
    short = one_error(lethe(server, "jobs", "show", server.ids["run"][:7]), 2)
    assert "too short" in short and "at least its first 8 characters" in short
    ambiguous = one_error(lethe(server, "jobs", "cancel", AMBIGUOUS[0][:12]), 2)
    assert "matches 2 jobs" in ambiguous and AMBIGUOUS[0] in ambiguous and AMBIGUOUS[1] in ambiguous
    assert "(logits, succeeded)" in ambiguous
    unknown = one_error(lethe(server, "jobs", "show", "fedcba98"), 1)
    assert "job fedcba98 not found" in unknown
    assert "job nope not found" in one_error(lethe(server, "jobs", "show", "nope"), 1)


def test_tables_off_a_terminal_keep_whole_rows_and_follow_columns_when_set(server):
    wide = lethe(server, "jobs", "list", "--all", columns=None)
    assert wide.exit_code == 0, wide.output
    for name in ("evaluate", "run", "train"):
        rows = [line for line in wide.stdout.splitlines() if server.ids[name] in line]
        assert len(rows) == 1 and len(rows[0]) > 120
    narrow = lethe(server, "jobs", "list", "--all", columns="80")
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    assert server.ids["run"] not in narrow.stdout  # folded to fit


def _moving_job(server: Server) -> str:
    with session_scope() as session:
        job = Job(kind="unlearn", tenant_id="local", status=JobStatus.queued)
        session.add(job)
        session.flush()
        return job.id


def _lines(stream) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            out.put(line.rstrip("\n"))
        out.put("<eof>")

    threading.Thread(target=pump, daemon=True).start()
    return out


def test_wait_off_a_terminal_writes_each_change_as_a_line_at_once(server):
    """The issue: piped, --wait printed nothing until the end. Each line must arrive while the job runs."""
    job_id = _moving_job(server)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    }
    env |= {"LETHE_URL": server.url, "LETHE_API_KEY": server.key, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "jobs", "wait", job_id[:8]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        lines = _lines(proc.stderr)
        label = f"job {job_id[:8]}"
        assert lines.get(timeout=120) == f"{label}    0%  queued"
        with session_scope() as session:
            claim(session, job_id)
            report_progress(session, job_id, 0.25, {"stage": "train", "epoch": 1, "epochs": 4, "loss": 1.5})
        assert lines.get(timeout=60) == f"{label}   25%  train  epoch 1/4  loss 1.5000"
        with session_scope() as session:
            report_progress(session, job_id, 0.9, {"stage": "evaluate", "eta_seconds": 75})
        assert lines.get(timeout=60) == f"{label}   90%  evaluate  ETA 1:15"
        with session_scope() as session:
            succeed(session, job_id, result={"model_id": "x"}, metrics=None)
        assert lines.get(timeout=60) == f"{label}  100%  succeeded"
        assert lines.get(timeout=60) == "<eof>"
        assert proc.wait(timeout=60) == 0
        assert "\x1b" not in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()

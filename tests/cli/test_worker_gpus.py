"""`lethe worker`: one worker process per GPU, each seeing only its own, on the queues of the roles it is given."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.workers import parse_gpus, worker_specs
from tests.conftest import REPO
from tests.e2e.stack import free_port, wait_for
from tests.utils import configure


def _option(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_one_worker_per_gpu_each_seeing_only_its_own(monkeypatch, tmp_path):
    configure(monkeypatch, home=tmp_path, queue="q", worker_concurrency=2)
    environ = {"PATH": "/bin", "LETHE_WORKER_METRICS_PORT": "9808", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    specs = worker_specs("", "1,3", None, environ)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["1", "3"]
    assert {s.env["LETHE_DEVICE"] for s in specs} == {"cuda"}  # cuda:0 of each, never a silent CPU fallback
    # One metrics port per host: the first worker serves the folder all of them write to.
    assert [s.env["LETHE_WORKER_METRICS_PORT"] for s in specs] == ["9808", "0"]
    assert len({_option(s.cmd, "--hostname") for s in specs}) == 2  # distinct Celery node names
    assert _option(specs[0].cmd, "--hostname").startswith("gpu1@")
    for spec in specs:
        assert _option(spec.cmd, "--queues") == "q.forget,q,q.evaluate"
        assert _option(spec.cmd, "--concurrency") == "2"  # jobs at once on each GPU
        assert spec.env["PATH"] == "/bin"
    assert environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # the caller's mapping is left alone


def test_without_gpus_one_worker_on_the_roles_given(monkeypatch, tmp_path):
    configure(monkeypatch, home=tmp_path, queue="q")
    [spec] = worker_specs("evaluate,train", "", 3, {"CUDA_VISIBLE_DEVICES": "2"})
    assert _option(spec.cmd, "--queues") == "q,q.evaluate" and _option(spec.cmd, "--concurrency") == "3"
    assert "--hostname" not in spec.cmd and spec.env == {"CUDA_VISIBLE_DEVICES": "2"}
    [forget] = worker_specs("forget", "0", None, {})
    assert _option(forget.cmd, "--queues") == "q.forget" and forget.env["CUDA_VISIBLE_DEVICES"] == "0"


def test_gpu_ids_that_cuda_takes():
    assert parse_gpus("0, 1,7") == ["0", "1", "7"]
    assert parse_gpus("GPU-5e1c2f3a-0b1c-4d2e-9f00-123456789abc") == [
        "GPU-5e1c2f3a-0b1c-4d2e-9f00-123456789abc"
    ]
    for bad in ("", ",", "0,,1", "-1", "cuda:0", "0;1"):
        with pytest.raises(ValueError, match="--gpus takes GPU indices"):
            parse_gpus(bad)
    with pytest.raises(ValueError, match="twice"):
        parse_gpus("0,1,0")


@pytest.mark.parametrize(
    ("args", "device", "message"),
    [
        (["--gpus", "0,x"], "auto", "--gpus takes GPU indices"),
        (["--gpus", "0,1"], "cpu", "LETHE_DEVICE=cpu"),
        (
            ["--queues", "forget,research"],
            "auto",
            "unknown queue role(s) research; valid: forget, train, evaluate",
        ),
    ],
)
def test_bad_options_are_refused_before_anything_starts(monkeypatch, tmp_path, args, device, message):
    configure(monkeypatch, home=tmp_path, device=device)
    started = time.monotonic()
    result = CliRunner().invoke(app, ["worker", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert time.monotonic() - started < 5


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
def test_lethe_worker_gpus_starts_a_real_worker_per_gpu_and_stops_them_all(pg_env, tmp_path):
    """Real Celery workers on Redis: each answers its own name, consumes only the queues asked for, and
    runs with its GPU alone visible; SIGTERM to `lethe worker` stops every one of them."""
    from core.queue import get_celery, queue_name

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LETHE_WORKER_METRICS_PORT": str(port),
    }
    log = tmp_path / "lethe-worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--gpus", "0,1", "--queues", "forget"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    logs = lambda: log.read_text(errors="replace")[-4000:]  # noqa: E731
    workers: list[int] = []
    try:
        workers = wait_for(lambda: (c := _children(proc.pid)) and len(c) == 2 and c, 60, "two workers", logs)
        seen = {}
        for pid in workers:
            cmd, wenv = _cmdline(pid), _environ(pid)
            assert "celery" in cmd and _option(cmd, "--queues") == queue_name("forget")
            assert wenv["LETHE_DEVICE"] == "cuda" and wenv["LETHE_QUEUE"] == pg_env["LETHE_QUEUE"]
            seen[wenv["CUDA_VISIBLE_DEVICES"]] = (
                _option(cmd, "--hostname"),
                wenv["LETHE_WORKER_METRICS_PORT"],
            )
        assert sorted(seen) == ["0", "1"] and seen["1"][1] == "0" and seen["0"][1] == str(port)
        names = {name for name, _ in seen.values()}
        control = get_celery().control

        def answering() -> set[str]:
            replies = control.inspect(destination=list(names), timeout=2).active_queues() or {}
            return set(replies) == names and replies

        queues = wait_for(answering, 180, "both workers answering", logs)
        assert {q["name"] for qs in queues.values() for q in qs} == {queue_name("forget")}
        # The first worker serves the host's job metrics; the second, given port 0, did not collide with it.
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 200
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, logs()
        gone = wait_for(lambda: not any(_alive(p) for p in workers), 30, "the workers to exit", logs)
        assert gone and "workers stopped" in logs()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        proc.wait()


def test_compose_split_profile_gives_every_role_a_worker_and_each_gpu_a_process(monkeypatch, tmp_path):
    """With `--scale worker=0`, the split services together serve every queue, and each `--gpus` names as
    many GPUs as the service reserves (inside a container they are numbered from 0)."""
    import yaml

    from core.queue import ROLES, parse_roles

    configure(monkeypatch, home=tmp_path)
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    split = {name: s for name, s in services.items() if "split" in s.get("profiles", [])}
    assert set(split) == {"worker-forget", "worker-research"}
    roles: list[str] = []
    for service in split.values():
        cmd = service["command"]
        assert cmd[:2] == ["lethe", "worker"]
        roles += parse_roles(_option(cmd, "--queues"))
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        reserved = len(device["device_ids"])
        gpus = parse_gpus(_option(cmd, "--gpus")) if "--gpus" in cmd else ["0"]
        assert gpus == [str(i) for i in range(reserved)]
        assert service["environment"]["LETHE_ARTIFACT_URL"].startswith("s3://")  # the shared env, merged
    assert sorted(roles) == sorted(ROLES)
    assert split["worker-forget"]["command"][-1] == "forget"  # deletions never wait behind research

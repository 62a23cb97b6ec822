"""Several hosts: an API host and two worker hosts, each a network namespace with its own address, share
only Postgres, Redis and an S3 server, over that network.

    root namespace: bridge 10.213.N.1 -- moto (S3), socat forwarders to the shared Postgres and Redis
        |-- veth -- api  10.213.N.2   uvicorn (and its maintenance sweep)
        |-- veth -- wa   10.213.N.3   `lethe worker`
        '-- veth -- wb   10.213.N.4   `lethe worker`

Each host also gets its own host name (a UTS namespace), so a job's worker column ("host:pid") says which
host ran it, and its own LETHE_HOME: no folder is shared. An evaluation's runs spread over both worker
hosts; host wa's worker is killed (SIGKILL to all its processes, as a lost machine) in the middle of a run,
which runs again on wb; and the evaluation's figures equal those of the same evaluation run by wb alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.conftest import REPO
from tests.core.s3server import CREDENTIALS, s3_client
from tests.e2e.stack import Processes, wait_for, wait_job
from tests.utils import configure

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUCKET = "lethe-multihost"
HOSTS = {"api": 2, "wa": 3, "wb": 4}
"""Each host's last address byte on the bridge's /24."""
JOB_TIMEOUT = 240
FORGET = list(range(0, 600, 20))
RUN_EPOCHS = 48
"""bad_teacher's epochs per unlearned run: 4.2 to 4.4 s a run on one thread of an AMD EPYC (6 took 0.5 s)."""
STALE_AFTER_S = 20
"""A run whose heartbeat (every second here) is this old is requeued by the API's sweep: far above the
heartbeat's gaps on a loaded machine, so only the killed host's run is requeued."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _must(*args: str) -> None:
    done = _ip(*args)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


@dataclass
class Network:
    """A bridge in the root namespace and one namespace per host, each joined to it by a veth pair."""

    tag: str
    subnet: str

    @property
    def bridge(self) -> str:
        return f"lmh{self.tag}br"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def ns(self, host: str) -> str:
        return f"lethe-mh{self.tag}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{HOSTS[host]}"

    def up(self) -> None:
        _must("link", "add", self.bridge, "type", "bridge")
        _must("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _must("link", "set", self.bridge, "up")
        for host in HOSTS:
            ns, outside = self.ns(host), f"lmh{self.tag}{host}"
            _must("netns", "add", ns)
            _must("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _must("link", "set", outside, "master", self.bridge, "up")
            _must("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _must("-n", ns, "link", "set", "eth0", "up")
            _must("-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        """Remove whatever exists of it (each namespace takes its end of the veth pair with it)."""
        for host in HOSTS:
            _ip("netns", "del", self.ns(host))
        _ip("link", "del", self.bridge)

    def run_on(self, host: str, cmd: list[str]) -> list[str]:
        """A command line that runs `cmd` on the host: in its namespace, under its own host name."""
        inner = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.ns(host), "unshare", "--uts", "sh", "-c", inner, host, *cmd]


def _netns_refusal() -> str | None:
    """Why this machine cannot build the hosts, or None when it can."""
    for tool in ("ip", "unshare", "socat"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"lethe-mh-probe-{os.getpid()}"
    made = _ip("netns", "add", probe)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here ({made.stderr.strip()}); it needs root or CAP_SYS_ADMIN"
    _ip("netns", "del", probe)
    return None


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@pytest.fixture
def network() -> Iterator[Network]:
    refusal = _netns_refusal()
    if refusal:
        pytest.skip(f"the multi-host test builds hosts as network namespaces: {refusal}")
    tag = str(os.getpid() % 10000)
    net = Network(tag=tag, subnet=f"10.213.{os.getpid() % 250 + 1}")
    net.down()  # a namespace of a killed earlier run with this pid
    try:
        net.up()
        yield net
    finally:
        net.down()


def _wait_port(address: str, port: int, what: str, logs: Any) -> None:
    def answers() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return True
        return False

    wait_for(answers, 120, what, logs)


def _runs(parent_id: str) -> list[dict[str, Any]]:
    """The evaluation's run jobs, each with every host that started it, in order."""
    from core.db import session_scope
    from core.tables import AuditEvent, Job

    with session_scope() as session:
        jobs = session.execute(select(Job).where(Job.parent_id == parent_id)).scalars().all()
        out = []
        for job in jobs:
            starts = session.execute(
                select(AuditEvent.detail)
                .where(
                    AuditEvent.object_type == "job",
                    AuditEvent.object_id == job.id,
                    AuditEvent.event == "running",
                )
                .order_by(AuditEvent.id)
            ).scalars()
            out.append(
                {
                    "id": job.id,
                    "kind": job.kind,
                    "status": job.status,
                    "attempts": job.attempts,
                    "host": (job.worker or "").split(":")[0] or None,
                    "hosts": [d["worker"].split(":")[0] for d in starts],
                }
            )
        return out


def _figures(evaluation: dict[str, Any]) -> dict[str, Any]:
    """What an evaluation measured, less what depends on the clock or on the run's ids."""
    results = dict(evaluation["results"])
    for key in ("wall_seconds", "cost_vs_retrain", "unlearned_run_ids"):
        results.pop(key, None)
    return results


def _forget_unacked(redis_url: str, queue_names: list[str]) -> None:
    """The killed worker's message stays in Redis's unacknowledged set (acks_late) until its visibility
    timeout; take it out, so no worker of a later test run restores it."""
    import redis

    r = redis.Redis.from_url(redis_url)
    for tag, payload in r.hgetall("unacked").items():
        with contextlib.suppress(ValueError, IndexError, TypeError):
            if json.loads(payload)[2] in queue_names:
                r.hdel("unacked", tag)
                r.zrem("unacked_index", tag)


def test_runs_spread_over_two_worker_hosts_and_a_lost_host_costs_nothing(
    network, pg_env, tmp_path, monkeypatch
):
    net = network
    gw = net.gateway
    procs = Processes(tmp_path)
    db, broker = make_url(pg_env["LETHE_DATABASE_URL"]), make_url(pg_env["LETHE_BROKER_URL"])
    pg_port, redis_port, s3_port = (_free_port(gw) for _ in range(3))
    # The shared Postgres and Redis listen on loopback only: forwarders on the bridge reach them.
    for port, target in ((pg_port, db.port or 5432), (redis_port, broker.port or 6379)):
        procs.start(
            f"forward-{target}",
            ["socat", f"TCP-LISTEN:{port},bind={gw},reuseaddr,fork", f"TCP:127.0.0.1:{target}"],
            dict(os.environ),
        )
    procs.start("s3", [sys.executable, "-m", "moto.server", "-H", gw, "-p", str(s3_port)], dict(os.environ))
    s3_url = f"http://{gw}:{s3_port}"
    shared = {
        "LETHE_DATABASE_URL": db.set(host=gw, port=pg_port).render_as_string(hide_password=False),
        "LETHE_BROKER_URL": broker.set(host=gw, port=redis_port).render_as_string(hide_password=False),
        "LETHE_QUEUE": pg_env["LETHE_QUEUE"],
        "LETHE_ARTIFACT_URL": f"s3://{BUCKET}/artifacts",
        "LETHE_S3_ENDPOINT_URL": s3_url,
        "LETHE_S3_ACCESS_KEY_ID": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "LETHE_S3_SECRET_ACCESS_KEY": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "LETHE_DEVICE": "cpu",
        "LETHE_TORCH_THREADS": "1",
        "LETHE_WORKER_CONCURRENCY": "1",
        "LETHE_PACK_SIZE": "2",
        "LETHE_HEARTBEAT_SECONDS": "1",
        "LETHE_STALE_AFTER_SECONDS": str(STALE_AFTER_S),
        "LETHE_MAINTENANCE_SECONDS": "1",
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LETHE_", "AWS_", "PROMETHEUS_"))}
    homes = {host: tmp_path / host for host in HOSTS}

    def host_env(host: str) -> dict[str, str]:
        return {
            **base,
            **shared,
            "LETHE_HOME": str(homes[host]),
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
        }

    def start(host: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        return procs.start(host, net.run_on(host, cmd), host_env(host), cwd=REPO)

    api_url = f"http://{net.address('api')}:8000"
    try:
        _wait_port(gw, s3_port, "the S3 server", procs.logs)
        s3_client(s3_url).create_bucket(Bucket=BUCKET)
        # This process writes the key and registers digits through the same servers and store.
        configure(
            monkeypatch,
            home=tmp_path / "test-home",
            **{k.removeprefix("LETHE_").lower(): v for k, v in shared.items() if k.startswith("LETHE_")},
        )
        from core.bootstrap import ensure_digits
        from core.db import session_scope
        from tests.utils import new_key

        with session_scope() as session:
            ensure_digits(session)
        key = new_key("local")
        start(
            "api",
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", net.address("api"), "--port", "8000"],
        )
        workers = {host: start(host, [sys.executable, "-m", "cli.main", "worker"]) for host in ("wa", "wb")}
        with httpx.Client(base_url=api_url, timeout=30, headers={"X-API-Key": key}) as http:
            wait_for(lambda: http.get("/health").status_code == 200, 120, "the API host", procs.logs)
            r = http.post(
                "/models",
                json={
                    "name": "tiny",
                    "dataset": "digits",
                    "arch": {"width": 4},
                    "recipe": {"epochs": 2, "lr": 0.05, "batch_size": 64},
                },
            )
            assert r.status_code == 202, r.text
            trained = wait_job(http, r.json()["job_id"], JOB_TIMEOUT, procs.logs)
            assert trained["status"] == "succeeded", (trained, procs.logs())

            body = {
                "model_id": "tiny",
                "forget_ids": FORGET,
                # bad_teacher runs one model per task (it is not packed), so four runs spread over the hosts.
                # A run must outlast the polls below many times over, or wa's second run can start and end
                # between two of them: 6 epochs took 0.5 s and once did; RUN_EPOCHS take several seconds.
                "method": "bad_teacher",
                "params": {"epochs": RUN_EPOCHS},
                "n_models": 4,
            }
            r = http.post("/evaluations", json=body)
            assert r.status_code == 202, r.text
            first = r.json()

            def wa_mid_second_run() -> dict[str, Any] | None:
                runs = _runs(first["job_id"])
                done_on_wa = [j for j in runs if j["status"] == "succeeded" and j["host"] == "wa"]
                running = [j for j in runs if j["status"] == "running" and j["host"] == "wa"]
                if runs and all(j["status"] == "succeeded" for j in runs):
                    raise AssertionError(
                        f"every run ended before wa ran a second one: {runs}\n{procs.logs()}"
                    )
                return running[0] if done_on_wa and running else None

            victim = wait_for(
                wa_mid_second_run,
                JOB_TIMEOUT,
                "host wa in the middle of its second run",
                procs.logs,
                interval=0.1,
            )
            os.killpg(workers["wa"].pid, signal.SIGKILL)  # the host is lost: its worker and its pool process
            workers["wa"].wait(timeout=30)

            evaluated = wait_job(http, first["job_id"], JOB_TIMEOUT + STALE_AFTER_S, procs.logs)
            assert evaluated["status"] == "succeeded", (evaluated, procs.logs())
            runs = {j["id"]: j for j in _runs(first["job_id"])}
            assert len(runs) == 2 + 4  # two reference packs of two, four unlearned runs
            assert all(j["status"] == "succeeded" for j in runs.values()), runs
            # Both worker hosts ran runs to the end ...
            assert {j["host"] for j in runs.values()} == {"wa", "wb"}, runs
            # ... and the run lost with wa started again on wb, its second attempt; no other run was retried.
            assert runs[victim["id"]]["hosts"] == ["wa", "wb"] and runs[victim["id"]]["attempts"] == 2
            assert all(j["attempts"] == 1 for i, j in runs.items() if i != victim["id"]), runs
            # The API host's sweep requeued it, and counted it when it did.
            metrics = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
            requeued = [
                s.value
                for s in metrics["lethe_jobs_requeued"].samples
                if s.name == "lethe_jobs_requeued_total" and s.labels == {"kind": victim["kind"]}
            ]
            assert requeued == [1.0]

            # The same evaluation again, with wb the only worker host left: the same figures.
            r = http.post("/evaluations", json=body)
            assert r.status_code == 202, r.text
            second = r.json()
            alone = wait_job(http, second["job_id"], JOB_TIMEOUT, procs.logs)
            assert alone["status"] == "succeeded", (alone, procs.logs())
            assert {j["host"] for j in _runs(second["job_id"])} == {"wb"}
            one = http.get(f"/evaluations/{first['evaluation_id']}").json()
            two = http.get(f"/evaluations/{second['evaluation_id']}").json()
            assert one["reference_set_id"] == two["reference_set_id"]
            assert _figures(one) == _figures(two)
            # Continuous figures of the runs' logits, not only counts that could agree by chance.
            assert (
                isinstance(one["results"]["kl_to_reference"], float) and one["results"]["kl_to_reference"] > 0
            )
            assert one["results"]["n_unlearned"] == 4 and one["results"]["n_reference"] == 4

        # Checkpoints and arrays went to the store; no host kept one in a folder of its own.
        stored = s3_client(s3_url).list_objects_v2(Bucket=BUCKET, Prefix="artifacts/")
        assert stored["KeyCount"] > 0
        local = [
            p for home in homes.values() for p in home.rglob("*") if p.suffix in (".safetensors", ".npy")
        ]
        assert local == []
    finally:
        procs.stop()
        from core.queue import worker_queues

        _forget_unacked(pg_env["LETHE_BROKER_URL"], worker_queues())

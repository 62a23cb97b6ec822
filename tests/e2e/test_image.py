"""The image docker compose builds, checked without Docker (no registry is reachable from CI machines).

The Dockerfile is parsed: what its build stage COPYs from the context (less .dockerignore) is laid
out in a clean folder and installed into a fresh virtual environment as its `RUN pip install .`
does; then every compose service's own command runs from that environment alone, outside the
repository and without PYTHONPATH: migrate, the API answering /health, a worker that completes a
forget request. Only the third-party dependencies (PyTorch above all) come from this machine's
environment instead of PyPI, through a path file that adds them after the installed packages.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from core.webhooks import sign
from tests.broker import stop_shared_worker
from tests.conftest import REPO
from tests.core.s3server import moto_server, s3_client
from tests.e2e.stack import Processes, Receiver, free_port, wait_for, wait_job

JOB_TIMEOUT = 300


@dataclass
class Stage:
    """One FROM ... [AS name] block of a Dockerfile and its instructions, in order."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [args for name, args in self.instructions if name == op]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, continuation lines joined."""
    stages: list[Stage] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        op, _, args = (logical + line).partition(" ")
        logical = ""
        op, args = op.upper(), args.strip()
        if op == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=words[0], name=name))
        else:
            stages[-1].instructions.append((op, args))
    return stages


def copy_sources(args: str) -> tuple[str | None, list[str], str]:
    """(--from stage or None, sources, destination) of a COPY instruction."""
    words = shlex.split(args)
    source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
    paths = [w for w in words if not w.startswith("--")]
    return source_stage, paths[:-1], paths[-1]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes this context path (or a folder above it)."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(prefix.rsplit("/", 1)[-1], bare)
            ):
                return True
    return False


def dockerignore() -> list[str]:
    path = REPO / ".dockerignore"
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]


def lay_out(stage: Stage, into: Path) -> None:
    """Copy what `stage` COPYs from the build context into `into` (its WORKDIR)."""
    patterns = dockerignore()
    for args in stage.all("COPY"):
        source_stage, sources, dest = copy_sources(args)
        if source_stage is not None:
            continue
        for src in sources:
            origin = REPO / src
            assert origin.exists(), f"the Dockerfile copies {src}, which does not exist"
            target = into / dest / (origin.name if dest.endswith("/") and origin.is_file() else "")
            if origin.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
                continue
            for file in origin.rglob("*"):
                rel = file.relative_to(REPO).as_posix()
                if file.is_file() and not ignored(rel, patterns):
                    out = into / dest / file.relative_to(origin)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)


def _stages() -> tuple[Stage, Stage]:
    """(the stage that runs `pip install .`, the runtime stage: the last)."""
    stages = parse_dockerfile((REPO / "Dockerfile").read_text())
    build = [s for s in stages if any("pip install ." in run for run in s.all("RUN"))]
    assert len(build) == 1, "one stage installs the project with `pip install .`"
    return build[0], stages[-1]


def test_image_installs_every_package_pyproject_declares(tmp_path):
    """What `pip install .` in the build stage sees includes every package pyproject.toml installs."""
    build, _ = _stages()
    lay_out(build, tmp_path)
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    wanted = {p.rstrip("*") for p in include["include"]}
    missing = sorted(p for p in wanted if not (tmp_path / p / "__init__.py").is_file())
    assert not missing, f"the Dockerfile does not copy {missing}"
    assert not list(tmp_path.rglob("__pycache__")) and not (tmp_path / "tests").exists()


def test_image_runs_as_a_non_root_user_from_a_slim_runtime_stage():
    build, final = _stages()
    assert build is not final, "the runtime stage is not the one that builds"
    assert [copy_sources(a) for a in final.all("COPY")] == [(build.name, ["/opt/venv"], "/opt/venv")]
    users = final.all("USER")
    assert users and users[-1] not in ("root", "0"), users
    assert not any("pip install" in run for run in final.all("RUN")), "the runtime stage builds nothing"
    assert {".git", ".venv", "var", "tests"} <= set(dockerignore())


def _fresh_environment(build: Stage, tmp_path: Path) -> Path:
    """A new virtual environment with the build stage's layout installed (not editable) in it."""
    src, venv = tmp_path / "src", tmp_path / "venv"
    lay_out(build, src)
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    )  # venv/lib/pythonX.Y/site-packages
    # Third-party packages only: a path line does not run this environment's own .pth files, so
    # the development checkout of Lethe it holds stays invisible.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    pip = ["-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [str(venv / "bin" / "python"), *pip, str(src)],
        check=True,
        env=_clean_env(venv, {}),
        cwd=tmp_path,
    )
    return venv


def _clean_env(venv: Path, service_env: dict[str, str]) -> dict[str, str]:
    """The service's environment: nothing of this checkout (no PYTHONPATH, no LETHE_* of the tests)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LETHE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(service_env)
    return env


def _command(venv: Path, cmd: list[str]) -> list[str]:
    """A compose command run from the fresh environment (console scripts, or `python -m` for those pip
    installed into the shared dependencies)."""
    script = venv / "bin" / cmd[0]
    if script.exists():
        return [str(script), *cmd[1:]]
    return [str(venv / "bin" / "python"), "-m", cmd[0], *cmd[1:]]


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.mark.e2e
@pytest.mark.slow
def test_compose_services_run_from_the_image_layout(pg_env, s3_endpoint, tmp_path):
    """migrate, api and worker: each compose service's command, from what the Dockerfile installs, with
    artifacts in an S3 server standing in for compose's MinIO."""
    # The suite's shared worker watches the same database: its delivery loop (which may not target
    # private addresses) would claim this test's webhook and push it back by the retry backoff.
    stop_shared_worker()
    build, _ = _stages()
    venv = _fresh_environment(build, tmp_path)
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    home = tmp_path / "lethe-home"
    port = free_port()
    artifacts = urlsplit(services["api"]["environment"]["LETHE_ARTIFACT_URL"])
    s3_client(s3_endpoint).create_bucket(Bucket=artifacts.netloc)  # what compose's minio-init does
    local = {
        "LETHE_DATABASE_URL": pg_env["LETHE_DATABASE_URL"],
        "LETHE_BROKER_URL": pg_env["LETHE_BROKER_URL"],
        "LETHE_QUEUE": pg_env["LETHE_QUEUE"],
        "LETHE_HOME": str(home),
        "LETHE_S3_ENDPOINT_URL": s3_endpoint,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LETHE_DEVICE": "cpu",
        "LETHE_WORKER_CONCURRENCY": "1",
        "LETHE_WEBHOOK_ALLOW_PRIVATE": "true",
    }

    def service_env(name: str) -> dict[str, str]:
        declared = {k: str(v) for k, v in services[name]["environment"].items()}
        return _clean_env(venv, {**declared, **local})

    workdir = tmp_path / "workdir"  # the runtime stage's WORKDIR holds no sources
    workdir.mkdir()
    procs = Processes(tmp_path)

    def start(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        return procs.start(name, _command(venv, cmd), service_env(name), cwd=workdir)

    receiver = Receiver()
    try:
        migrate = start("migrate", services["migrate"]["command"])
        assert migrate.wait(timeout=300) == 0, procs.logs()
        api_cmd = [{"8000": str(port), "0.0.0.0": "127.0.0.1"}.get(c, c) for c in services["api"]["command"]]
        start("api", api_cmd)
        worker_cmd = [c if c != "lethe" else local["LETHE_QUEUE"] for c in services["worker"]["command"]]
        start("worker", worker_cmd)
        key = (home / "api-key").read_text().strip()
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers={"X-API-Key": key}
        ) as http:
            wait_for(lambda: http.get("/health").status_code == 200, 120, "the API", procs.logs)
            assert http.get("/health").json() == {"status": "ok", "database": "ok", "broker": "ok"}
            demo = http.get("/models/demo").json()
            train = wait_job(http, demo["job_id"], JOB_TIMEOUT, procs.logs)
            assert train["status"] == "succeeded", (train, procs.logs())
            hook = http.post("/webhooks", json={"url": receiver.url, "events": ["job.succeeded"]}).json()
            r = http.post(
                "/unlearn", json={"model_id": "demo", "forget_ids": [3, 14, 15], "method": "finetune"}
            )
            assert r.status_code == 202, r.text
            job = wait_job(http, r.json()["job_id"], JOB_TIMEOUT, procs.logs)
            assert job["status"] == "succeeded", (job, procs.logs())
            child = http.get(f"/models/{job['result']['model_id']}").json()
            assert child["status"] == "ready" and child["n_forgotten"] == 3
            # The worker service sends the job's webhook, signed.
            assert receiver.got.wait(180), f"no webhook delivered\n{procs.logs()}"  # a loaded machine: room
            headers, body = receiver.requests[0]
            assert headers["x-lethe-signature"] == sign(hook["secret"], body)
            assert json.loads(body)["job"]["id"] == job["id"]
    finally:
        procs.stop()
        receiver.close()
    # The services ran the installed copy, not this checkout.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import cli, client, api; print(cli.__file__, client.__file__)"],
        env=service_env("migrate"),
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(venv)) for path in where.stdout.split()), where.stdout

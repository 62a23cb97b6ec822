"""The `lethe` command line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer

from cli.commands import COMMANDS, GROUPS
from cli.lazy import Lazy, LazyGroup


def _echo(msg: str) -> None:
    typer.echo(f"lethe: {msg}", err=True)


def worker_command(
    concurrency: int | None = None, loglevel: str = "INFO", queues: list[str] | None = None
) -> list[str]:
    """The Celery worker command line that `lethe up`, `lethe worker` and docker compose run.

    `concurrency` (default LETHE_WORKER_CONCURRENCY) is the number of jobs run at once, each in its own
    pool process; several share one GPU. It serves `queues` (default: every queue), forget requests first.
    """
    from core.queue import worker_queues
    from core.settings import get_settings

    settings = get_settings()
    jobs = settings.worker_concurrency if concurrency is None else concurrency
    if jobs < 1:
        raise ValueError(f"worker concurrency must be at least 1, got {jobs}")
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--queues",
        ",".join(queues or worker_queues()),
        "--concurrency",
        str(jobs),
        "--pool",
        "prefork",
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]


def migrate(
    bootstrap: bool = typer.Option(False, help="also register digits and queue the demo model"),
    wait: float = typer.Option(60.0, help="seconds to wait for the database to accept connections"),
) -> None:
    """Bring the database schema to the newest migration (the only way the schema is created)."""
    from tenacity import retry, stop_after_delay, wait_fixed

    from core import migrate as mig
    from core.bootstrap import ensure_demo, ensure_local_key
    from core.db import session_scope
    from core.services import commit_and_publish
    from core.settings import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    retry(stop=stop_after_delay(wait), wait=wait_fixed(1), reraise=True)(mig.upgrade)(settings.db_url)
    _echo("database schema is up to date")
    if bootstrap:
        with session_scope() as session:
            key_path = ensure_local_key(session, settings.resolved_home)
        if key_path:
            _echo(f"created an API key for tenant 'local' in {key_path}: send it as the X-API-Key header")
        with session_scope() as session:
            job_id = ensure_demo(session)
            if job_id:
                commit_and_publish(session, job_id)
                _echo(f"queued training of the demo model (job {job_id})")


def maintain(
    once: bool = typer.Option(False, help="one pass, then exit (for cron)"),
    interval: float = typer.Option(10.0, help="seconds between passes"),
) -> None:
    """Requeue jobs whose worker died and republish jobs whose broker message was lost (the API does this too)."""
    from core.maintenance import sweep

    while True:
        report = sweep()
        _echo(
            f"requeued {len(report.requeued)}, failed {len(report.failed)}, republished {len(report.republished)}"
        )
        if once:
            return
        time.sleep(interval)


keys_app = typer.Typer(help="API keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(tenant: str = typer.Option(..., help="tenant the key belongs to (created if new)")) -> None:
    """Print a new API key for a tenant; it is shown once and stored only as a hash."""
    from core.auth import create_key
    from core.db import session_scope
    from core.errors import LetheError

    try:
        with session_scope() as session:
            key = create_key(session, tenant)
    except LetheError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    tenant: str | None = typer.Option(None, help="only this tenant's keys"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Keys by prefix, tenant and dates (secrets are never stored, so never shown)."""
    from core.auth import list_keys
    from core.db import session_scope

    with session_scope() as session:
        rows = [
            {
                "prefix": k.prefix,
                "tenant": k.tenant_id,
                "created_at": k.created_at.isoformat(timespec="seconds"),
                "revoked_at": k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else None,
            }
            for k in list_keys(session, tenant)
        ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        typer.echo(f"{row['prefix']}  {row['tenant']}  created {row['created_at']}  {state}")


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="the whole key, or the prefix `lethe keys list` shows"),
) -> None:
    """Revoke a key: requests with it are refused (401) once API processes' key caches expire."""
    from core.auth import revoke_key
    from core.db import session_scope
    from core.errors import LetheError
    from core.settings import get_settings

    try:
        with session_scope() as session:
            row = revoke_key(session, key)
            prefix, tenant = row.prefix, row.tenant_id
    except LetheError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"revoked {prefix} (tenant {tenant}); API processes refuse it within "
        f"{get_settings().auth_cache_seconds:g} s (LETHE_AUTH_CACHE_SECONDS)"
    )


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when the thread that started it ends, even by SIGKILL.

    SIGTERM is the worker's warm shutdown: it hands its running jobs back to the queue and exits within
    LETHE_WORKER_STOP_SECONDS (worker/shutdown.py), so nothing outlives a killed `lethe up`.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _Supervisor:
    """Keeps one worker process alive until asked to stop; a crashed worker is started again.

    One thread starts, watches and stops the worker, and lives until the worker is gone: Linux sends a
    child its death signal when the thread that started it ends, not the process.
    """

    def __init__(self, cmd: list[str], stop_seconds: float = 15.0, env: dict[str, str] | None = None) -> None:
        self.cmd = cmd
        self.env = env
        self.stop_seconds = stop_seconds
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lethe-supervisor")

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def _run(self) -> None:
        try:
            self.proc = self._spawn()
        finally:
            self._started.set()
        while not self.stopping.wait(1.0):
            if self.proc.poll() is not None:
                _echo(f"worker exited with code {self.proc.returncode}; starting a new one")
                if self.stopping.wait(1.0):
                    break
                self.proc = self._spawn()
        self._end(self.proc)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.cmd, env=self.env, start_new_session=True, preexec_fn=_die_with_parent)

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        """Warm shutdown first (the worker hands its jobs back), then SIGKILL to whatever is left of its group."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds + 5  # the worker's own deadline comes first
        # Wait without reaping, so that the worker's process group id cannot be reused before it is killed.
        while (
            time.monotonic() < deadline
            and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        ):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # pool processes, or a worker stuck in its shutdown
        proc.wait()

    def stop(self) -> None:
        """Stop the worker; returns once it and its pool processes are gone."""
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join()


def _sign_in_hint(key_path: Path) -> str:
    """How to sign in to the dashboard: with the key `lethe up` wrote on first start, or with a new one."""
    if key_path.exists():
        return f"sign in with the API key in {key_path}"
    return "sign in with an API key (`lethe keys create --tenant local` makes one)"


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def up(
    host: str = typer.Option("127.0.0.1", envvar="LETHE_HOST", help="address the API listens on"),
    port: int = typer.Option(8000, envvar="LETHE_PORT", help="port the API listens on"),
    demo: bool = typer.Option(True, help="register digits and train the demo model on first start"),
    concurrency: int | None = typer.Option(
        None,
        min=1,
        help="jobs the worker runs at once (default: LETHE_WORKER_CONCURRENCY, itself 1 unless set)",
    ),
) -> None:
    """Run everything on this machine: migrations, the API and one worker. Ctrl-C stops both."""
    import uvicorn

    from core.maintenance import requeue_orphans
    from core.settings import get_settings

    settings = get_settings()
    # The worker's pool processes hand their job metrics to the API's /metrics through files there;
    # set before anything in this process imports prometheus_client.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.resolved_home / "metrics"))
    migrate(bootstrap=demo, wait=60.0)
    _echo(f"home {settings.resolved_home}; database {settings.db_url}; broker {settings.broker}")
    if orphans := requeue_orphans():
        _echo(f"requeued {len(orphans)} job(s) left running by a worker of this machine that is gone")
    supervisor = _Supervisor(worker_command(concurrency), settings.worker_stop_seconds)
    # uvicorn shuts down on SIGTERM, then raises it again for the handler it found: the default one would
    # end this process at once, skipping the `finally` that stops the worker.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        supervisor.start()
        _echo(f"worker started; API on http://{host}:{port} (docs at /docs)")
        _echo(f"dashboard at http://{host}:{port}/ : {_sign_in_hint(settings.resolved_home / 'api-key')}")
        uvicorn.run("api.main:app", host=host, port=port, log_level="info")
    finally:
        _echo("stopping the worker")
        supervisor.stop()
        if orphans := requeue_orphans():
            _echo(f"requeued {len(orphans)} job(s) the worker left running")


def worker(
    queues: str = typer.Option(
        "", help="roles to serve, comma-separated: forget, train, evaluate (default: all, forget first)"
    ),
    gpus: str = typer.Option(
        "", help="one worker process per GPU, e.g. 0,1 (each sees only its own: CUDA_VISIBLE_DEVICES)"
    ),
    concurrency: int | None = typer.Option(
        None, min=1, help="jobs each worker process runs at once (default: LETHE_WORKER_CONCURRENCY)"
    ),
) -> None:
    """Run this host's worker(s): one Celery worker, or one per GPU with --gpus, on the queues of --queues."""
    from cli.workers import run_workers

    run_workers(queues=queues, gpus=gpus, concurrency=concurrency)


class _Lethe(LazyGroup):
    """`lethe`: each command is imported and built when it runs (cli.lazy); help lists them in this order."""

    lazy = {
        "epsilon": Lazy(
            "cli.epsilon:epsilon_command",
            help="Epsilon-hat of unlearned vs reference logits (the study's forget-quality metric).",
        ),
        **COMMANDS,
        "migrate": Lazy(migrate),
        "maintain": Lazy(maintain),
        "up": Lazy(up),
        "worker": Lazy(worker),
        "datasets": Lazy("cli.datasets:datasets_app"),
        "tenants": Lazy("cli.tenants:tenants_app"),
        "certificate": Lazy("cli.certificate:certificate_app"),
        **GROUPS,
        "keys": Lazy(keys_app),
    }


app = typer.Typer(
    cls=_Lethe,
    help="Lethe: make a trained classifier forget samples, and measure how well it forgot.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _lethe() -> None:
    # Does nothing: typer builds an app as a group only when it has a callback or registered commands,
    # and _Lethe's commands are not registered on the app.
    pass


if __name__ == "__main__":
    app()

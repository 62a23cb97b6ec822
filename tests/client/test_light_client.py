"""The client as its own light distribution: httpx and pydantic only, sync and async alike, its models
checked against the server's /openapi.json, retries on 429 and 503."""

from __future__ import annotations

import asyncio
import inspect
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

import client.models as client_models
from client import AsyncClient, Client, JobMetrics, RateLimited, ServerError
from tests.client import FORGET, Stack, live_stack, worker
from tests.conftest import REPO

FORBIDDEN = ("torch", "numpy", "sqlalchemy", "fastapi", "celery", "api", "core", "ml", "worker", "cli")


def _wheel(tmp_path: Path) -> Path:
    """client/ built by its own pyproject.toml, from a copy (the build leaves its folders behind)."""
    src = tmp_path / "client-src"
    shutil.copytree(REPO / "client", src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        cwd=tmp_path,
    )
    [wheel] = out.glob("lethe_client-*.whl")
    return wheel


def test_the_client_installs_alone_and_imports_no_part_of_the_server(tmp_path):
    wheel = _wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        files = zf.namelist()
        meta = Parser().parsestr(zf.read(next(n for n in files if n.endswith("/METADATA"))).decode())
    assert sorted(r.split(">")[0].split("=")[0] for r in meta.get_all("Requires-Dist")) == [
        "httpx",
        "pydantic",
    ]
    assert {f.split("/")[0] for f in files if not f.startswith("lethe_client-")} == {"client"}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # httpx and pydantic come from this machine's environment (a path line: its own .pth files, which
    # hold the development checkout, do not run); everything of the server is made unimportable below.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        env=env,
        cwd=tmp_path,
    )
    probe = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {FORBIDDEN!r}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import client, client.aio
from client import AsyncClient, Client, JobMetrics
Client("http://127.0.0.1:9").close()
print(client.__file__)
"""
    result = subprocess.run([python, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(site)), result.stdout


# The models against the server's OpenAPI document


def _server_name(client_name: str, components: dict) -> str:
    return client_name if client_name in components else f"{client_name}Public"


def _types(schema: dict, rename) -> frozenset[str]:
    """A property's JSON-schema type, normalised: refs by server name, unions flattened, Any as any."""
    if "$ref" in schema:
        return frozenset({"ref:" + rename(schema["$ref"].rsplit("/", 1)[1])})
    if "anyOf" in schema:
        return frozenset().union(*(_types(s, rename) for s in schema["anyOf"]))
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _types(schema["allOf"][0], rename)
    kind = schema.get("type")
    if kind is None:
        return frozenset({"any"})
    if kind == "array":
        return frozenset({"array[" + ",".join(sorted(_types(schema.get("items", {}), rename))) + "]"})
    if kind == "string" and schema.get("format") == "date-time":
        return frozenset({"datetime"})
    return frozenset({kind})


def _client_models() -> list[type[BaseModel]]:
    return [
        m
        for m in vars(client_models).values()
        if inspect.isclass(m) and issubclass(m, client_models.Out) and m is not client_models.Out
    ]


@pytest.fixture(scope="module")
def openapi() -> dict:
    from api.main import create_app

    return create_app().openapi()


def _drift(model: type[BaseModel], components: dict) -> list[str]:
    """How a client model differs from the server's schema of the same object (empty: it does not)."""

    def rename(name: str) -> str:
        return _server_name(name.removesuffix("-Output"), components)

    name = _server_name(model.__name__, components)
    if name not in components:
        return [f"{model.__name__}: no server schema {name}"]
    server = components[name]
    mine = model.model_json_schema(ref_template="#/components/schemas/{model}")
    problems = [
        f"{model.__name__}.{f}: only in the {side}"
        for side, fields in (
            ("client", set(mine["properties"]) - set(server["properties"])),
            ("server", set(server["properties"]) - set(mine["properties"])),
        )
        for f in sorted(fields)
    ]
    for field, prop in mine["properties"].items():
        if field in server["properties"]:
            ours, theirs = _types(prop, rename), _types(server["properties"][field], rename)
            if ours != theirs:
                problems.append(f"{model.__name__}.{field}: client {sorted(ours)}, server {sorted(theirs)}")
    # The client must not insist on a field the server may leave out.
    problems += [
        f"{model.__name__}.{f}: required by the client only"
        for f in sorted(set(mine.get("required", [])) - set(server.get("required", [])))
    ]
    return problems


@pytest.fixture(scope="module")
def components(openapi) -> dict:
    return {k.removesuffix("-Output"): v for k, v in openapi["components"]["schemas"].items()}


def test_every_client_model_matches_the_server_schema(components):
    models = _client_models()
    assert [p for m in models for p in _drift(m, components)] == []
    names = {_server_name(m.__name__, components) for m in models}
    assert {"JobPublic", "ModelPublic", "JobMetrics", "WebhookCreated", "DeliveryPublic"} <= names


def test_the_checker_sees_a_drift(components):
    """A field renamed, retyped or newly required on one side is caught: the comparison is not vacuous."""

    class Job(client_models.Job):
        attempts: str  # type: ignore[assignment]
        state: str = "x"

    class JobMetrics(client_models.JobMetrics):
        method: str  # type: ignore[assignment]

    assert _drift(Job, components) == [
        "Job.state: only in the client",
        "Job.attempts: client ['string'], server ['integer']",
    ]
    assert _drift(JobMetrics, components) == [
        "JobMetrics.method: client ['string'], server ['null', 'string']",
        "JobMetrics.method: required by the client only",
    ]


# Sync and async alike


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(fn)
        for name, fn in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_the_async_client_has_every_method_of_the_sync_one_with_the_same_parameters():
    sync, aio = _public_methods(Client), _public_methods(AsyncClient)
    assert set(sync) - {"close"} == set(aio) - {"aclose"}
    for name, signature in sync.items():
        if name == "close":
            continue
        assert list(signature.parameters.values()) == list(aio[name].parameters.values()), name
    init = list(inspect.signature(AsyncClient.__init__).parameters)
    assert init == list(inspect.signature(Client.__init__).parameters)


# Retries on 429 and 503


class _Script:
    """A stand-in server answering a scripted list of responses, recording requests and the client's sleeps."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0)


def _job_body() -> dict:
    return {"retain_accuracy": 0.9, "method": "finetune"}


@pytest.fixture
def no_sleep(monkeypatch) -> Iterator[list[float]]:
    sleeps: list[float] = []

    async def asleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr("client.client.time.sleep", sleeps.append)
    monkeypatch.setattr("client.aio.asyncio.sleep", asleep)
    yield sleeps


def _run_both(script_factory, call):
    """Run `call(api)` on a sync and an async client, each on a fresh script; returns both scripts and results."""
    out = []
    sync_script = script_factory()
    with Client("http://lethe.test", transport=httpx.MockTransport(sync_script)) as api:
        try:
            out.append((sync_script, call(api)))
        except Exception as exc:
            out.append((sync_script, exc))
    async_script = script_factory()

    async def go():
        async with AsyncClient("http://lethe.test", transport=httpx.MockTransport(async_script)) as api:
            try:
                return await call(api)
            except Exception as exc:
                return exc

    out.append((async_script, asyncio.run(go())))
    return out


def test_503_and_429_are_retried_honouring_retry_after(no_sleep):
    def script():
        return _Script(
            httpx.Response(503, json={"detail": "database unavailable"}, headers={"Retry-After": "2"}),
            httpx.Response(429, json={"detail": "slow down"}),
            httpx.Response(200, json=_job_body()),
        )

    for s, metrics in _run_both(script, lambda api: api.get_job_metrics("j1")):
        assert isinstance(metrics, JobMetrics) and metrics.retain_accuracy == 0.9
        assert len(s.requests) == 3
    assert no_sleep[0] == 2.0 and 0.5 <= no_sleep[1] <= 1.0  # Retry-After, then backoff with jitter
    assert no_sleep[2] == 2.0 and 0.5 <= no_sleep[3] <= 1.0  # the async client waited the same


def test_retries_stop_after_the_limit_and_for_a_long_retry_after(no_sleep):
    def limited():
        return _Script(*[httpx.Response(429, json={"detail": "slow down"}) for _ in range(4)])

    for s, error in _run_both(limited, lambda api: api.list_models()):
        assert isinstance(error, RateLimited) and len(s.requests) == 4  # 1 + RETRIES

    def far():
        return _Script(httpx.Response(429, json={"detail": "quota"}, headers={"Retry-After": "3600"}))

    for s, error in _run_both(far, lambda api: api.list_models()):
        assert isinstance(error, RateLimited) and error.retry_after == 3600 and len(s.requests) == 1


def test_a_post_is_retried_on_503_only_with_an_idempotency_key(no_sleep):
    def script():
        return _Script(
            httpx.Response(503, json={"detail": "database unavailable"}),
            httpx.Response(202, json={"job_id": "j1", "forget_request_id": "f1"}),
        )

    for s, error in _run_both(script, lambda api: api.unlearn("m", [1], "none")):
        assert isinstance(error, ServerError) and len(s.requests) == 1
    for s, created in _run_both(script, lambda api: api.unlearn("m", [1], "none", idempotency_key="k1")):
        assert created.job_id == "j1" and len(s.requests) == 2
        assert all(r.headers["Idempotency-Key"] == "k1" for r in s.requests)


# The async client against the real server


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with live_stack(pg_url, redis_url, tmp_path_factory.mktemp("aio") / "home") as s:
        yield s


def test_the_async_client_unlearns_waits_and_downloads(stack, tmp_path):
    async def scenario() -> tuple:
        async with AsyncClient(stack.url, api_key=stack.api_key) as api:
            assert (await api.health()).ok
            assert (await api.get_model("tiny")).id == stack.model_id
            created = await api.unlearn("tiny", FORGET, "finetune", params={"epochs": 1}, name="aio-forgot")
            seen = [job async for job in api.wait(created.job_id, poll=0.1, timeout=120)]
            metrics = await api.get_job_metrics(created.job_id)
            path = await api.download_model("aio-forgot", tmp_path)
            models = [m.name async for m in api.pages("/models", client_models.ModelList)]
            return seen, metrics, path, models

    with worker():
        seen, metrics, path, models = asyncio.run(scenario())
    assert seen[0].status in ("queued", "running") and seen[-1].status == "succeeded"
    assert (
        isinstance(metrics, JobMetrics) and metrics.method == "finetune" and metrics.n_forget == len(FORGET)
    )
    assert path == tmp_path / "aio-forgot.safetensors" and path.stat().st_size > 0
    assert "aio-forgot" in models and "tiny" in models

"""The asyncio twin of client.Client: the same methods, awaited, on one httpx.AsyncClient.

tests/client/test_light_client.py keeps the two method for method alike (names and parameters).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from client.client import (
    API_KEY_HEADER,
    DEFAULT_URL,
    IDEMPOTENCY_HEADER,
    MAX_RETRY_WAIT,
    RETRIES,
    Client,
    _attachment_name,
    _error,
    _seg,
    _without_none,
    file_sha256,
    retry_wait,
    tls_settings,
)
from client.errors import ConnectionFailed, LetheError, NotFound, WaitTimeout
from client.models import (
    Dataset,
    DatasetList,
    DeliveryList,
    Evaluation,
    EvaluationCreated,
    EvaluationTable,
    ForgetRequest,
    Health,
    Job,
    JobList,
    JobMetrics,
    LogitsCreated,
    Method,
    Model,
    ModelCreated,
    ModelList,
    ReferenceCreated,
    ReferenceSet,
    Score,
    ScoreList,
    Study,
    StudyCreated,
    UnlearnCreated,
    Webhook,
    WebhookCreated,
    WebhookList,
)


class AsyncClient:
    """The Lethe API over HTTP for asyncio code; `async with`, or await aclose(), to release its connections."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retries: int = RETRIES,
        max_retry_wait: float = MAX_RETRY_WAIT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.retries, self.max_retry_wait = retries, max_retry_wait
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport, verify=tls_settings(url)
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(
        self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """Client._send, awaited: retried on 429 and 503, other failures as LetheErrors."""
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                raise ConnectionFailed(f"{self.url} did not answer {method} {path} in time ({exc})") from exc
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc
            if response.is_success or response.status_code in ok:
                return response
            wait = retry_wait(response.request, response, attempt, self.max_retry_wait)
            if wait is None or attempt == self.retries:
                break
            await asyncio.sleep(wait)
        raise _error(response)

    @asynccontextmanager
    async def _stream(
        self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        try:
            async with self._http.stream(method, path, **kwargs) as response:
                if not response.is_success and response.status_code not in ok:
                    await response.aread()
                    raise _error(response)
                yield response
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(f"{self.url} did not answer {method} {path} in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc

    async def _get(self, path: str, kind: Any, **kwargs: Any) -> Any:
        return Client._parse(await self._send("GET", path, **kwargs), kind)

    async def _post(
        self, path: str, body: dict[str, Any], kind: Any, idempotency_key: str | None = None
    ) -> Any:
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        return Client._parse(await self._send("POST", path, json=body, headers=headers), kind)

    # System and catalog

    async def health(self) -> Health:
        """Whether the database and broker are up; a 503 answer is returned as Health(status="down")."""
        return Client._parse(await self._send("GET", "/health", ok=(503,)), Health)

    async def list_methods(self) -> list[Method]:
        return await self._get("/methods", list[Method])

    async def list_datasets(self) -> list[Dataset]:
        return [d async for d in self.pages("/datasets", DatasetList)]

    # Models

    async def create_model(
        self,
        dataset: str,
        *,
        name: str | None = None,
        arch: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        seed: int = 0,
        idempotency_key: str | None = None,
    ) -> ModelCreated:
        body = _without_none(name=name, dataset=dataset, arch=arch, recipe=recipe, seed=seed)
        return await self._post("/models", body, ModelCreated, idempotency_key)

    async def upload_model(
        self,
        checkpoint: str | Path | bytes,
        dataset: str,
        *,
        name: str | None = None,
        arch: dict[str, Any] | None = None,
        filename: str = "model.safetensors",
    ) -> ModelCreated:
        if isinstance(checkpoint, bytes):
            data = checkpoint
        else:
            path = Path(checkpoint)
            data, filename = await asyncio.to_thread(path.read_bytes), path.name
        form = _without_none(dataset=dataset, name=name, arch=None if arch is None else json.dumps(arch))
        response = await self._send("POST", "/models", data=form, files={"file": (filename, data)})
        return Client._parse(response, ModelCreated)

    async def list_models(self, *, limit: int | None = None, cursor: str | None = None) -> ModelList:
        return await self._get("/models", ModelList, params=_without_none(limit=limit, cursor=cursor))

    async def get_model(self, model: str) -> Model:
        return await self._get(f"/models/{_seg(model)}", Model)

    async def download_model(self, model: str, dest: str | Path = ".") -> Path:
        """Client.download_model, awaited: streamed to `dest`, checked against the ETag's sha256."""
        return await self._download(f"/models/{_seg(model)}/weights", dest, f"{model}.safetensors")

    async def download_artifact(self, job_id: str, name: str, dest: str | Path = ".") -> Path:
        """Client.download_artifact, awaited."""
        return await self._download(f"/jobs/{_seg(job_id)}/artifacts/{_seg(name)}", dest, name)

    async def _download(self, path: str, dest: str | Path, default_name: str) -> Path:
        dest = Path(dest)
        headers = {"If-None-Match": f'"{file_sha256(dest)}"'} if dest.is_file() else {}
        async with self._stream("GET", path, ok=(304,), headers=headers) as response:
            if response.status_code == 304:
                return dest
            target = dest / _attachment_name(response, default_name) if dest.is_dir() else dest
            expected = response.headers.get("etag", "").removeprefix("W/").strip('"')
            partial = target.with_name(f".{target.name}.part")
            digest = hashlib.sha256()
            try:
                with partial.open("wb") as fh:
                    async for chunk in response.aiter_bytes(1 << 20):
                        digest.update(chunk)
                        fh.write(chunk)
                if expected and digest.hexdigest() != expected:
                    raise LetheError(
                        f"{path} arrived damaged: sha256 {digest.hexdigest()}, expected {expected}"
                    )
                partial.replace(target)
            finally:
                partial.unlink(missing_ok=True)
        return target

    # Logits and scores

    async def logits(
        self,
        model: str,
        *,
        ids: list[int] | None = None,
        split: str | None = None,
        forget_request_id: str | None = None,
    ) -> LogitsCreated:
        body = _without_none(ids=ids, split=split, forget_request_id=forget_request_id)
        return await self._post(f"/models/{_seg(model)}/logits", body, LogitsCreated)

    async def score(
        self,
        file: str | Path | bytes,
        *,
        delta: float | None = None,
        approach: str | None = None,
        bootstrap: int | None = None,
        filename: str = "logits.npz",
    ) -> Score:
        if isinstance(file, bytes):
            data = file
        else:
            path = Path(file)
            data, filename = await asyncio.to_thread(path.read_bytes), path.name
        form = _without_none(delta=delta, approach=approach, bootstrap=bootstrap)
        response = await self._send("POST", "/scores", data=form, files={"file": (filename, data)})
        return Client._parse(response, Score)

    async def list_scores(self, *, limit: int | None = None, cursor: str | None = None) -> ScoreList:
        return await self._get("/scores", ScoreList, params=_without_none(limit=limit, cursor=cursor))

    # Unlearning and jobs

    async def unlearn(
        self,
        model: str,
        forget_ids: list[int] | None,
        method: str,
        *,
        forget_class: int | None = None,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        name: str | None = None,
        requested_by: str | None = None,
        idempotency_key: str | None = None,
    ) -> UnlearnCreated:
        body = _without_none(
            model_id=model,
            forget_ids=list(forget_ids) if forget_ids is not None else None,
            forget_class=forget_class,
            method=method,
            params=params or {},
            seed=seed,
            name=name,
            requested_by=requested_by,
        )
        return await self._post("/unlearn", body, UnlearnCreated, idempotency_key)

    async def get_forget_request(self, forget_request_id: str) -> ForgetRequest:
        return await self._get(f"/forget-requests/{_seg(forget_request_id)}", ForgetRequest)

    async def get_job(self, job_id: str) -> Job:
        return await self._get(f"/jobs/{_seg(job_id)}", Job)

    async def get_job_metrics(self, job_id: str) -> JobMetrics:
        return await self._get(f"/jobs/{_seg(job_id)}/metrics", JobMetrics)

    async def list_jobs(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        model_id: str | None = None,
        top_level: bool = False,
        id_prefix: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JobList:
        return await self._get(
            "/jobs",
            JobList,
            params=_without_none(
                status=status,
                kind=kind,
                model_id=model_id,
                top_level=top_level or None,
                id_prefix=id_prefix,
                limit=limit,
                cursor=cursor,
            ),
        )

    async def cancel(self, job_id: str) -> Job:
        return Client._parse(await self._send("POST", f"/jobs/{_seg(job_id)}/cancel"), Job)

    async def events(self, job_id: str, poll: float = 0.5, read_timeout: float = 60.0) -> AsyncIterator[Job]:
        """Client.events, as an async iterator: the job on every change until it has finished."""
        interval = min(10.0, max(0.1, poll))
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        path = f"/jobs/{_seg(job_id)}/events"
        async with self._stream("GET", path, params={"interval": interval}, timeout=timeout) as response:
            event, data = "message", []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue
                if line:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "event":
                        event = value
                    elif field == "data":
                        data.append(value)
                    continue
                if event == "end":
                    return
                if event == "job" and data:
                    yield Client._parse_json("\n".join(data), Job, path)
                event, data = "message", []

    async def wait(self, job_id: str, poll: float = 0.5, timeout: float | None = None) -> AsyncIterator[Job]:
        """Client.wait, as an async iterator: the event stream, else polling; WaitTimeout after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[Any, ...] | None = None

        def changed(job: Job) -> bool:
            nonlocal seen
            state = (job.status, job.progress, job.progress_info, job.error)
            if state == seen:
                return False
            seen = state
            return True

        job = await self.get_job(job_id)
        yield job
        changed(job)
        if job.finished:
            return
        try:
            # A stream ends at the job's end, or after the server's longest stream: then follow on.
            while deadline is None or time.monotonic() < deadline:
                left = None if deadline is None else max(0.1, deadline - time.monotonic())
                read_timeout = 60.0 if left is None else min(60.0, left)
                streamed = False
                async for job in self.events(job_id, poll=poll, read_timeout=read_timeout):
                    streamed = True
                    if changed(job):
                        yield job
                    if job.finished:
                        return
                    if deadline is not None and time.monotonic() > deadline:
                        break
                if not streamed:
                    break  # a stream that sends nothing at all is not one to reconnect to
        except (NotFound, ConnectionFailed, httpx.HTTPError):
            pass  # no stream on this server, or it broke: poll instead
        while True:
            job = await self.get_job(job_id)
            if changed(job):
                yield job
            if job.finished:
                return
            if deadline is not None and time.monotonic() + poll > deadline:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g}s")
            await asyncio.sleep(poll)

    async def wait_done(self, job_id: str, poll: float = 0.5, timeout: float | None = None) -> Job:
        last = None
        async for job in self.wait(job_id, poll=poll, timeout=timeout):
            last = job
        assert last is not None
        return last

    # Forget quality: reference sets, evaluations, studies

    async def create_references(
        self,
        forget_ids: list[int],
        *,
        model: str | None = None,
        dataset: str | None = None,
        n_models: int = 8,
        arch: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ReferenceCreated:
        body = _without_none(
            model_id=model,
            dataset=dataset,
            forget_ids=list(forget_ids),
            n_models=n_models,
            arch=arch,
            recipe=recipe,
        )
        return await self._post("/references", body, ReferenceCreated, idempotency_key)

    async def get_reference_set(self, reference_set_id: str) -> ReferenceSet:
        return await self._get(f"/references/{_seg(reference_set_id)}", ReferenceSet)

    async def create_evaluation(
        self,
        model: str,
        forget_ids: list[int] | None,
        method: str,
        *,
        forget_class: int | None = None,
        params: dict[str, Any] | None = None,
        n_models: int = 8,
        delta: float = 0.05,
        idempotency_key: str | None = None,
    ) -> EvaluationCreated:
        body = _without_none(
            model_id=model,
            forget_ids=list(forget_ids) if forget_ids is not None else None,
            forget_class=forget_class,
            method=method,
            params=params or {},
            n_models=n_models,
            delta=delta,
        )
        return await self._post("/evaluations", body, EvaluationCreated, idempotency_key)

    async def get_evaluation(self, evaluation_id: str) -> Evaluation:
        return await self._get(f"/evaluations/{_seg(evaluation_id)}", Evaluation)

    async def list_evaluations(
        self,
        *,
        reference_set_id: str | None = None,
        study_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> EvaluationTable:
        query = _without_none(
            reference_set_id=reference_set_id, study_id=study_id, limit=limit, cursor=cursor
        )
        return await self._get("/evaluations", EvaluationTable, params=query)

    async def evaluations_csv(
        self, *, reference_set_id: str | None = None, study_id: str | None = None
    ) -> str:
        query = _without_none(reference_set_id=reference_set_id, study_id=study_id)
        return (await self._send("GET", "/evaluations", params=query, headers={"Accept": "text/csv"})).text

    async def get_evaluation_plot(self, evaluation_id: str, name: str = "epsilon-delta") -> bytes:
        return (await self._send("GET", f"/evaluations/{_seg(evaluation_id)}/plots/{_seg(name)}.png")).content

    async def create_study(
        self,
        model: str,
        methods: list[str],
        *,
        forget_ids: list[int] | None = None,
        forget_fraction: float | None = None,
        n_models: int = 8,
        delta: float = 0.05,
        seed: int = 0,
        idempotency_key: str | None = None,
    ) -> StudyCreated:
        body = _without_none(
            model_id=model,
            forget_ids=None if forget_ids is None else list(forget_ids),
            forget_fraction=forget_fraction,
            methods=list(methods),
            n_models=n_models,
            delta=delta,
            seed=seed,
        )
        return await self._post("/studies", body, StudyCreated, idempotency_key)

    async def get_study(self, study_id: str) -> Study:
        return await self._get(f"/studies/{_seg(study_id)}", Study)

    async def export_study(self, study_id: str) -> bytes:
        return (await self._send("GET", f"/studies/{_seg(study_id)}/export")).content

    # Paging

    async def pages(self, path: str, kind: Any, **query: Any) -> AsyncIterator[Any]:
        """Client.pages, as an async iterator over every item of a list endpoint."""
        cursor = None
        while True:
            page = await self._get(path, kind, params=_without_none(**query, cursor=cursor))
            for item in page.data:
                yield item
            cursor = getattr(page, "next_cursor", None)
            if not cursor:
                return

    # Webhooks

    async def create_webhook(self, url: str, events: list[str] | None = None) -> WebhookCreated:
        return await self._post("/webhooks", _without_none(url=url, events=events), WebhookCreated)

    async def list_webhooks(self) -> WebhookList:
        return await self._get("/webhooks", WebhookList)

    async def get_webhook(self, webhook_id: str) -> Webhook:
        return await self._get(f"/webhooks/{_seg(webhook_id)}", Webhook)

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._send("DELETE", f"/webhooks/{_seg(webhook_id)}")

    async def list_deliveries(
        self, webhook_id: str, *, status: str | None = None, limit: int | None = None
    ) -> DeliveryList:
        query = _without_none(status=status, limit=limit)
        return await self._get(f"/webhooks/{_seg(webhook_id)}/deliveries", DeliveryList, params=query)

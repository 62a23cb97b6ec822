"""A typed HTTP client of the Lethe API: pydantic answers and one exception class per kind of failure."""

from __future__ import annotations

import hashlib
import json
import random
import re
import ssl
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from client.errors import (
    Conflict,
    ConnectionFailed,
    InvalidRequest,
    LetheError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    WaitTimeout,
    field_errors,
)
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

DEFAULT_URL = "http://127.0.0.1:8000"
API_KEY_HEADER = "X-API-Key"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRIES = 3
"""Retries of a request answered 429 or 503 (see retry_wait)."""
MAX_RETRY_WAIT = 30.0
"""The longest wait before a retry; a Retry-After beyond it is raised at once, for the caller to decide."""
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _seg(value: str) -> str:
    """A user-given id or name as one path segment, whatever characters it holds."""
    return quote(value, safe="")


@lru_cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    """One validator per answer type, built once (wait() parses a job every poll)."""
    return TypeAdapter(kind)


def tls_settings(url: str) -> ssl.SSLContext | bool:
    """httpx's `verify` for a base URL: its default (the CA bundle, loaded now) for https, and for plain http a
    context without certificates, so that a client is not slow to create for want of ones it never uses
    (loading the bundle is most of that time); any https connection made with it fails verification."""
    if url.lower().startswith("http://"):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


def _without_none(**fields: Any) -> dict[str, Any]:
    """A request body without the fields left unset, so the server applies its own defaults."""
    return {k: v for k, v in fields.items() if v is not None}


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header, which is either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def retry_wait(
    request: httpx.Request, response: httpx.Response, attempt: int, max_wait: float
) -> float | None:
    """Seconds to wait before retrying this answer, or None when it must not be retried.

    429 was refused before any work, so it is always retried; 503 only for requests that are safe to
    repeat (GET and the like, or a POST with an Idempotency-Key). Retry-After is honoured; without it the
    waits grow 0.5, 1, 2 ... seconds with jitter.
    """
    status = response.status_code
    safe = request.method in SAFE_METHODS or IDEMPOTENCY_HEADER in request.headers
    if status != 429 and not (status == 503 and safe):
        return None
    after = _retry_after(response.headers.get("Retry-After"))
    if after is not None:
        return after if after <= max_wait else None
    return min(max_wait, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)


def file_sha256(path: Path) -> str:
    """A file's sha256, read in chunks (checkpoints are tens to hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _attachment_name(response: httpx.Response, fallback: str) -> str:
    """The file name of a Content-Disposition attachment, as a bare name (no folders)."""
    found = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    name = Path(found.group(1)).name if found else ""
    return name if name not in ("", ".", "..") else fallback


def _error(response: httpx.Response) -> LetheError:
    """The exception for a failed answer, carrying the server's `detail` message."""
    status = response.status_code
    try:
        detail: Any = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text or response.reason_phrase
    if status == 422:
        return InvalidRequest(field_errors(detail))
    message = detail if isinstance(detail, str) else "; ".join(e.message for e in field_errors(detail))
    where = f"{response.request.method} {response.request.url.path}"
    if status == 404:
        return NotFound(
            message if message != "Not Found" else f"{where}: not found on this server", status=404
        )
    if status == 409:
        return Conflict(message, status=409)
    if status in (401, 403):
        return Unauthorized(message, status=status)
    if status == 429:
        return RateLimited(message, retry_after=_retry_after(response.headers.get("Retry-After")))
    if status >= 500:
        return ServerError(f"{where} failed with {status}: {message}", status=status)
    return LetheError(f"{where} answered {status}: {message}", status=status)


class Client:
    """The Lethe API over HTTP; use as a context manager, or call close(), to release its connections."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retries: int = RETRIES,
        max_retry_wait: float = MAX_RETRY_WAIT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.retries, self.max_retry_wait = retries, max_retry_wait
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport, verify=tls_settings(url)
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _send(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One request, retried on 429 and 503 (retry_wait); any other status outside 2xx (and `ok`)
        becomes the matching LetheError."""
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                raise ConnectionFailed(f"{self.url} did not answer {method} {path} in time ({exc})") from exc
            except httpx.TransportError as exc:
                raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc
            if response.is_success or response.status_code in ok:
                return response
            wait = retry_wait(response.request, response, attempt, self.max_retry_wait)
            if wait is None or attempt == self.retries:
                break
            time.sleep(wait)
        raise _error(response)

    @contextmanager
    def _stream(
        self, method: str, path: str, *, ok: tuple[int, ...] = (), **kwargs: Any
    ) -> Iterator[httpx.Response]:
        """A streamed request, with the same errors as _send; the body is read by the caller."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if not response.is_success and response.status_code not in ok:
                    response.read()
                    raise _error(response)
                yield response
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(f"{self.url} did not answer {method} {path} in time ({exc})") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc

    def _get(self, path: str, kind: Any, **kwargs: Any) -> Any:
        return self._parse(self._send("GET", path, **kwargs), kind)

    def _post(self, path: str, body: dict[str, Any], kind: Any, idempotency_key: str | None = None) -> Any:
        """POST a JSON body; with an idempotency key, a retried request returns the first answer."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        return self._parse(self._send("POST", path, json=body, headers=headers), kind)

    @staticmethod
    def _parse(response: httpx.Response, kind: Any) -> Any:
        """The answer's JSON as `kind`; an answer of another shape is a LetheError, not a ValidationError."""
        where = f"{response.request.method} {response.request.url.path}"
        return Client._parse_json(response.content, kind, where, response.status_code)

    @staticmethod
    def _parse_json(data: str | bytes, kind: Any, where: str, status: int | None = None) -> Any:
        try:
            return _adapter(kind).validate_json(data)
        except ValidationError as exc:
            raise LetheError(f"unexpected answer to {where}: {exc}", status=status) from exc

    # System and catalog

    def health(self) -> Health:
        """Whether the database and broker are up; a 503 answer is returned as Health(status="down")."""
        return self._parse(self._send("GET", "/health", ok=(503,)), Health)

    def list_methods(self) -> list[Method]:
        """Every unlearning method with its parameters' JSON schema."""
        return self._get("/methods", list[Method])

    def list_datasets(self) -> list[Dataset]:
        """The registered data sets and their sizes (sample ids run from 0 to n_train - 1), every page."""
        return list(self.pages("/datasets", DatasetList))

    # Models

    def create_model(
        self,
        dataset: str,
        *,
        name: str | None = None,
        arch: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        seed: int = 0,
        idempotency_key: str | None = None,
    ) -> ModelCreated:
        """Queue training of a new model from scratch."""
        body = _without_none(name=name, dataset=dataset, arch=arch, recipe=recipe, seed=seed)
        return self._post("/models", body, ModelCreated, idempotency_key)

    def upload_model(
        self,
        checkpoint: str | Path | bytes,
        dataset: str,
        *,
        name: str | None = None,
        arch: dict[str, Any] | None = None,
        filename: str = "model.safetensors",
    ) -> ModelCreated:
        """Register a trained checkpoint (safetensors or a PyTorch state dict) as a ready model."""
        if isinstance(checkpoint, bytes):
            data = checkpoint
        else:
            path = Path(checkpoint)
            data, filename = path.read_bytes(), path.name
        form = _without_none(dataset=dataset, name=name, arch=None if arch is None else json.dumps(arch))
        response = self._send("POST", "/models", data=form, files={"file": (filename, data)})
        return self._parse(response, ModelCreated)

    def list_models(self, *, limit: int | None = None, cursor: str | None = None) -> ModelList:
        """One page of models, newest first; `next_cursor` asks for the next (or use pages("/models", ModelList))."""
        return self._get("/models", ModelList, params=_without_none(limit=limit, cursor=cursor))

    def get_model(self, model: str) -> Model:
        """A model by id or name, with its lineage."""
        return self._get(f"/models/{_seg(model)}", Model)

    def download_model(self, model: str, dest: str | Path = ".") -> Path:
        """Stream a ready model's safetensors checkpoint to `dest` and return its path.

        `dest` is a file, or a folder to save into under the server's file name. The bytes are checked
        against the sha256 the server sends as ETag before they replace anything; a file already at
        `dest` with that sha256 is kept as it is (the server answers 304 and sends nothing).
        """
        return self._download(f"/models/{_seg(model)}/weights", dest, f"{model}.safetensors")

    def download_artifact(self, job_id: str, name: str, dest: str | Path = ".") -> Path:
        """Stream an artifact a succeeded job wrote (logits.npz of a logits job) to `dest`, checked like a model."""
        return self._download(f"/jobs/{_seg(job_id)}/artifacts/{_seg(name)}", dest, name)

    def _download(self, path: str, dest: str | Path, default_name: str) -> Path:
        """GET path streamed to a file (or into a folder) through a partial file, verified against the ETag."""
        dest = Path(dest)
        headers = {"If-None-Match": f'"{file_sha256(dest)}"'} if dest.is_file() else {}
        with self._stream("GET", path, ok=(304,), headers=headers) as response:
            if response.status_code == 304:
                return dest
            target = dest / _attachment_name(response, default_name) if dest.is_dir() else dest
            expected = response.headers.get("etag", "").removeprefix("W/").strip('"')
            partial = target.with_name(f".{target.name}.part")
            digest = hashlib.sha256()
            try:
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
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

    def logits(
        self,
        model: str,
        *,
        ids: list[int] | None = None,
        split: str | None = None,
        forget_request_id: str | None = None,
    ) -> LogitsCreated:
        """Queue a job computing the model's logits on `ids` (of `split`), a whole `split`, or a forget
        request's ids; when it succeeded, download_artifact(job_id, "logits.npz") fetches them."""
        body = _without_none(ids=ids, split=split, forget_request_id=forget_request_id)
        return self._post(f"/models/{_seg(model)}/logits", body, LogitsCreated)

    def score(
        self,
        file: str | Path | bytes,
        *,
        delta: float | None = None,
        approach: str | None = None,
        bootstrap: int | None = None,
        filename: str = "logits.npz",
    ) -> Score:
        """Epsilon-hat of logits made elsewhere: a seed-layout zip or an .npz (see docs/logits.md)."""
        if isinstance(file, bytes):
            data = file
        else:
            path = Path(file)
            data, filename = path.read_bytes(), path.name
        form = _without_none(delta=delta, approach=approach, bootstrap=bootstrap)
        response = self._send("POST", "/scores", data=form, files={"file": (filename, data)})
        return self._parse(response, Score)

    def list_scores(self, *, limit: int | None = None, cursor: str | None = None) -> ScoreList:
        """One page of the tenant's scores, newest first."""
        return self._get("/scores", ScoreList, params=_without_none(limit=limit, cursor=cursor))

    # Unlearning and jobs

    def unlearn(
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
        """Queue a job that makes `model` forget `forget_ids` (or a whole `forget_class`) with `method`."""
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
        return self._post("/unlearn", body, UnlearnCreated, idempotency_key)

    def get_forget_request(self, forget_request_id: str) -> ForgetRequest:
        """A forget request with its outcome and every audit event: who asked, when, what was done."""
        return self._get(f"/forget-requests/{_seg(forget_request_id)}", ForgetRequest)

    def get_job(self, job_id: str) -> Job:
        """A job's state, progress and result."""
        return self._get(f"/jobs/{_seg(job_id)}", Job)

    def get_job_metrics(self, job_id: str) -> JobMetrics:
        """A finished job's metrics (accuracies, wall time, epsilon-hat ... by kind); NotFound until it has some."""
        return self._get(f"/jobs/{_seg(job_id)}/metrics", JobMetrics)

    def list_jobs(
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
        """One page of jobs, newest first (GET /jobs), filtered by every argument given; `next_cursor` asks for
        the next. `model_id` takes a model's id or name, `top_level` leaves out the runs of evaluations and
        studies, `id_prefix` matches the first characters of a job's id."""
        return self._get(
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

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one ends at once, a running one at its next step; Conflict once finished."""
        return self._parse(self._send("POST", f"/jobs/{_seg(job_id)}/cancel"), Job)

    def events(self, job_id: str, poll: float = 0.5, read_timeout: float = 60.0) -> Iterator[Job]:
        """The job from GET /jobs/{id}/events: at once, then on every change, until it has finished.

        The server sends a comment every 15 s while nothing changes, so `read_timeout` ends only a dead
        stream (httpx.ReadTimeout); NotFound from servers without the stream.
        """
        interval = min(10.0, max(0.1, poll))
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        path = f"/jobs/{_seg(job_id)}/events"
        with self._stream("GET", path, params={"interval": interval}, timeout=timeout) as response:
            event, data = "message", []
            for line in response.iter_lines():
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
                    yield self._parse_json("\n".join(data), Job, path)
                event, data = "message", []

    def wait(self, job_id: str, poll: float = 0.5, timeout: float | None = None) -> Iterator[Job]:
        """Yield the job each time its status or progress changes; returns once it has finished.

        Follows the server-sent events of GET /jobs/{id}/events, and polls GET /jobs/{id} every `poll`
        seconds on servers without them or when the stream breaks. Raises WaitTimeout when `timeout`
        seconds pass first (the job keeps running on the server).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[Any, ...] | None = None

        def changed(job: Job) -> bool:
            nonlocal seen
            state = (job.status, job.progress, job.progress_info, job.error)
            if state == seen:
                return False
            seen = state
            return True

        job = self.get_job(job_id)
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
                for job in self.events(job_id, poll=poll, read_timeout=read_timeout):
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
            job = self.get_job(job_id)
            if changed(job):
                yield job
            if job.finished:
                return
            if deadline is not None and time.monotonic() + poll > deadline:
                raise WaitTimeout(f"job {job_id} is still {job.status} after {timeout:g}s")
            time.sleep(poll)

    def wait_done(self, job_id: str, poll: float = 0.5, timeout: float | None = None) -> Job:
        """The job once it has finished (succeeded, failed or cancelled)."""
        return deque(self.wait(job_id, poll=poll, timeout=timeout), maxlen=1)[0]

    # Forget quality: reference sets, evaluations, studies

    def create_references(
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
        """Train N reference models without `forget_ids` (job_id is None when the set already has them)."""
        body = _without_none(
            model_id=model,
            dataset=dataset,
            forget_ids=list(forget_ids),
            n_models=n_models,
            arch=arch,
            recipe=recipe,
        )
        return self._post("/references", body, ReferenceCreated, idempotency_key)

    def get_reference_set(self, reference_set_id: str) -> ReferenceSet:
        """A reference set and its runs counted by job status."""
        return self._get(f"/references/{_seg(reference_set_id)}", ReferenceSet)

    def create_evaluation(
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
        """Queue an evaluation: epsilon-hat of `method` run with N seeds against N reference models."""
        body = _without_none(
            model_id=model,
            forget_ids=list(forget_ids) if forget_ids is not None else None,
            forget_class=forget_class,
            method=method,
            params=params or {},
            n_models=n_models,
            delta=delta,
        )
        return self._post("/evaluations", body, EvaluationCreated, idempotency_key)

    def get_evaluation(self, evaluation_id: str) -> Evaluation:
        """An evaluation and, once scored, its results."""
        return self._get(f"/evaluations/{_seg(evaluation_id)}", Evaluation)

    def list_evaluations(
        self,
        *,
        reference_set_id: str | None = None,
        study_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> EvaluationTable:
        """One page of evaluations side by side (the study's Table 1), optionally of one reference set or study."""
        query = _without_none(
            reference_set_id=reference_set_id, study_id=study_id, limit=limit, cursor=cursor
        )
        return self._get("/evaluations", EvaluationTable, params=query)

    def evaluations_csv(self, *, reference_set_id: str | None = None, study_id: str | None = None) -> str:
        """The same table as list_evaluations, as CSV text."""
        query = _without_none(reference_set_id=reference_set_id, study_id=study_id)
        return self._send("GET", "/evaluations", params=query, headers={"Accept": "text/csv"}).text

    def get_evaluation_plot(self, evaluation_id: str, name: str = "epsilon-delta") -> bytes:
        """A PNG figure of a scored evaluation: "epsilon-delta" or "histograms"."""
        return self._send("GET", f"/evaluations/{_seg(evaluation_id)}/plots/{_seg(name)}.png").content

    def create_study(
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
        """Queue the study's protocol: one reference set and one evaluation per method."""
        body = _without_none(
            model_id=model,
            forget_ids=None if forget_ids is None else list(forget_ids),
            forget_fraction=forget_fraction,
            methods=list(methods),
            n_models=n_models,
            delta=delta,
            seed=seed,
        )
        return self._post("/studies", body, StudyCreated, idempotency_key)

    def get_study(self, study_id: str) -> Study:
        """A study with its evaluations' ids."""
        return self._get(f"/studies/{_seg(study_id)}", Study)

    def export_study(self, study_id: str) -> bytes:
        """A finished study's seed layout as zip bytes; Conflict while any method is unscored."""
        return self._send("GET", f"/studies/{_seg(study_id)}/export").content

    # Paging

    def pages(self, path: str, kind: Any, **query: Any) -> Iterator[Any]:
        """Every item of a list endpoint, page after page: each page's `next_cursor` is sent back as
        `cursor` until a page has none."""
        cursor = None
        while True:
            page = self._get(path, kind, params=_without_none(**query, cursor=cursor))
            yield from page.data
            cursor = getattr(page, "next_cursor", None)
            if not cursor:
                return

    # Webhooks

    def create_webhook(self, url: str, events: list[str] | None = None) -> WebhookCreated:
        """Subscribe `url` to job events (default: succeeded, failed, cancelled); keep the secret it returns."""
        return self._post("/webhooks", _without_none(url=url, events=events), WebhookCreated)

    def list_webhooks(self) -> WebhookList:
        """The tenant's webhooks, without their secrets."""
        return self._get("/webhooks", WebhookList)

    def get_webhook(self, webhook_id: str) -> Webhook:
        return self._get(f"/webhooks/{_seg(webhook_id)}", Webhook)

    def delete_webhook(self, webhook_id: str) -> None:
        """Unsubscribe; its delivery records go with it."""
        self._send("DELETE", f"/webhooks/{_seg(webhook_id)}")

    def list_deliveries(
        self, webhook_id: str, *, status: str | None = None, limit: int | None = None
    ) -> DeliveryList:
        """Every delivery to a webhook, newest first: status, attempts, last answer, the signed body."""
        query = _without_none(status=status, limit=limit)
        return self._get(f"/webhooks/{_seg(webhook_id)}/deliveries", DeliveryList, params=query)

"""The dashboard: server-rendered pages over the tenant's jobs, models, forget requests and evaluations.

A browser signs in by POSTing an API key with the sign-in form (which carries a CSRF token bound to a
cookie of its own); it then holds only a random session token in an HttpOnly, SameSite=Strict cookie, so
the key never appears in a URL, a log line or the browser's history. Every page reads the tenant from that
session (or from the X-API-Key header). The pages reuse the API's own lookups, so they show exactly what the
JSON endpoints answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from api.deps import SessionDep
from api.routes.evaluations import _row, list_evaluations, read_evaluation, read_plot
from api.routes.events import sse
from api.routes.forget_requests import read_forget_request
from api.routes.models import to_public, weights_response
from core import certificates, purge, services
from core.auth import end_session, start_session, tenant_for, tenant_for_session
from core.checkpoints import model_weights
from core.db import read_session
from core.errors import Conflict, NotFound
from core.settings import get_settings
from core.tables import FINISHED, Evaluation, ForgetRequest, Job, Model

COOKIE = "lethe_session"
CSRF_COOKIE = "lethe_csrf"
LOGIN_PATH = "/ui/login"
RECENT = 30
"""Rows per list on the overview; jobs that have not finished are shown beyond it."""

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")


def number(value: Any, digits: int = 3) -> str:
    """Results hold floats, "inf" strings and nulls; show each the way a reader expects."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return {"inf": "∞", "Infinity": "∞", "-inf": "-∞", "-Infinity": "-∞"}.get(value, value)
    if isinstance(value, float):
        return ("∞" if value > 0 else "-∞") if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def when(value: datetime | None) -> str:
    """Timestamps to the second, in UTC, short enough for a table cell."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def seconds(value: float) -> str:
    """An ETA a person reads at a glance: 42 s, 3 min 5 s, 1 h 2 min."""
    value = max(0, round(value))
    if value < 60:
        return f"{value} s"
    if value < 3600:
        return f"{value // 60} min {value % 60} s"
    return f"{value // 3600} h {value % 3600 // 60} min"


def percent(fraction: float) -> float:
    """Tenths of a percent, so a long job's bar text moves as soon as its bar does."""
    return round(100 * fraction, 1)


def progress_text(info: dict[str, Any]) -> str:
    """Stage, epoch, loss and ETA of a job's progress_info in one line, the same on the page and live."""
    parts: list[str] = []
    stage = info.get("stage")
    if stage == "runs" and "total" in info:
        parts.append(f"runs {info.get('finished', 0)}/{info['total']}")
    elif stage:
        parts.append(str(stage))
    if info.get("epoch") is not None:
        parts.append(f"epoch {info['epoch']}" + (f"/{info['epochs']}" if info.get("epochs") else ""))
    if isinstance(info.get("loss"), int | float):
        parts.append(f"loss {info['loss']:.4f}")
    if isinstance(info.get("eta_seconds"), int | float):
        parts.append(f"ETA {seconds(info['eta_seconds'])}")
    return " · ".join(parts)


templates.env.filters.update(number=number, when=when, percent=lambda f: f"{percent(f):g}")
templates.env.globals["progress_text"] = progress_text


def _tenant(request: Request, session: SessionDep) -> str | None:
    """The tenant of the X-API-Key header (API clients) or of the browser's session cookie."""
    key = request.headers.get("x-api-key")
    if key is not None:
        return tenant_for(session, key)
    return tenant_for_session(session, request.cookies.get(COOKIE))


def _signed_out_message(request: Request) -> str | None:
    """Why the form is shown: a refused header key, a session that ended, or nothing (first visit)."""
    if request.headers.get("x-api-key") is not None:
        return "That key is unknown or revoked."
    if request.cookies.get(COOKIE):
        return "Your session has ended (signed out, expired, or its key was revoked): sign in again."
    return None


def form_token(token: str) -> str:
    """The CSRF value of a signed-in page's forms (sign out, purge): derived from the session token, which no
    other site can read."""
    return hashlib.sha256(f"form:{token}".encode()).hexdigest()[:32]


def _form_allowed(request: Request, form: Any, token: str) -> bool:
    return secrets.compare_digest(str(form.get("csrf") or ""), form_token(token)) and _same_origin(request)


def _same_origin(request: Request) -> bool:
    """A browser's form POST names its origin; one from another site is refused (no header: not a browser's)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


def _render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    """A page with a fresh script nonce: the policy allows our inline script and nothing injected."""
    nonce = secrets.token_urlsafe(16)
    response = templates.TemplateResponse(request, name, {**context, "nonce": nonce}, status_code=status_code)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
        "img-src 'self'; frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["Cache-Control"] = "no-store"
    # same-origin, not no-referrer: under no-referrer a browser sends its form POSTs with "Origin: null",
    # which the sign-in and sign-out forms refuse; other sites still get no referrer.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _login(
    request: Request, message: str | None = None, status_code: int = 401, after: str | None = None
) -> HTMLResponse:
    """The sign-in form with a fresh CSRF token, whose twin goes into a cookie sent only to the sign-in POST;
    `after` is where a successful sign-in leads (by default the page that asked for it)."""
    csrf = secrets.token_urlsafe(24)
    if after is None:
        after = request.url.path if request.url.path.startswith("/ui/") else "/"
    context = {"message": message, "csrf": csrf, "next": after}
    response = _render(request, "login.html", context, status_code=status_code)
    response.set_cookie(
        CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=_secure(request), path=LOGIN_PATH
    )
    return response


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page(
    request: Request, session: SessionDep, name: str, build: Callable[[str], dict[str, Any]]
) -> HTMLResponse:
    """The sign-in form without a valid key or session, 404 for what the tenant does not own, 409 for what is not
    ready yet, else the page."""
    tenant = _tenant(request, session)
    if tenant is None:
        return _login(request, _signed_out_message(request))
    token = request.cookies.get(COOKIE)
    signed = {"tenant": tenant, "form_csrf": form_token(token) if token else None}
    try:
        context = build(tenant)
    except NotFound as exc:
        return _render(request, "not_found.html", {**signed, "message": exc.message}, 404)
    except Conflict as exc:
        return _render(
            request, "not_found.html", {**signed, "message": exc.message, "heading": "Not yet"}, 409
        )
    return _render(request, name, {**signed, **context})


def _jobs(session: SessionDep, tenant: str) -> list[Job]:
    """Top-level jobs (an evaluation's runs count in its progress): every unfinished one, then the newest."""
    top = select(Job).where(Job.tenant_id == tenant, Job.parent_id.is_(None))
    recent = session.execute(top.order_by(Job.created_at.desc()).limit(RECENT)).scalars().all()
    seen = {j.id for j in recent}
    live = session.execute(top.where(Job.status.not_in(list(FINISHED)))).scalars().all()
    return sorted([*recent, *(j for j in live if j.id not in seen)], key=lambda j: j.created_at, reverse=True)


def _job_links(session: SessionDep, jobs: list[Job]) -> dict[str, str]:
    """Where each job's outcome is shown: its evaluation, its forget request, or its model."""
    evals = dict(
        session.execute(
            select(Evaluation.job_id, Evaluation.id).where(Evaluation.job_id.in_([j.id for j in jobs]))
        ).all()
    )
    links = {}
    for job in jobs:
        if job.id in evals:
            links[job.id] = f"/ui/evaluations/{evals[job.id]}"
        elif job.forget_request_id:
            links[job.id] = f"/ui/forget-requests/{job.forget_request_id}"
        elif job.model_id and job.kind == "train":
            links[job.id] = f"/ui/models/{job.model_id}"
    return links


def _job_json(job: Job, link: str | None) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "progress_info": job.progress_info or {},
        "percent": percent(job.progress),
        "detail": progress_text(job.progress_info or {}),
        "created_at": when(job.created_at),
        "href": link,
    }


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep) -> Response:
    if "key" in request.query_params:
        return _login(
            request,
            "A key in the address is never accepted (it ends up in logs and the browser's history): "
            "sign in with this form, then remove the old address from your bookmarks.",
            status_code=400,
        )

    def build(tenant: str) -> dict[str, Any]:
        jobs = _jobs(session, tenant)
        models = session.execute(
            select(Model).where(Model.tenant_id == tenant).order_by(Model.created_at.desc()).limit(RECENT)
        ).scalars()
        requests = session.execute(
            select(ForgetRequest, Job.status)
            .outerjoin(Job, Job.id == ForgetRequest.job_id)
            .where(ForgetRequest.tenant_id == tenant)
            .order_by(ForgetRequest.created_at.desc())
            .limit(RECENT)
        ).all()
        evaluations = session.execute(
            select(Evaluation)
            .where(Evaluation.tenant_id == tenant)
            .order_by(Evaluation.created_at.desc())
            .limit(RECENT)
        ).scalars()
        return {
            "jobs": jobs,
            "links": _job_links(session, jobs),
            "models": [to_public(session, m) for m in models],
            "names": _names(session, tenant),
            "requests": requests,
            "evaluations": [(e, _row(session, e)) for e in evaluations],
        }

    return _page(request, session, "index.html", build)


def _names(session: SessionDep, tenant: str) -> dict[str, str]:
    """Model names by id, so links read as names; unnamed models show their short id."""
    rows = session.execute(select(Model.id, Model.name).where(Model.tenant_id == tenant)).all()
    return {i: n or i[:8] for i, n in rows}


@router.post(LOGIN_PATH)
async def login(request: Request, session: SessionDep) -> Response:
    """Sign in with the form: the key is checked, and the browser gets a session token, never the key."""
    form = await request.form(max_files=0, max_fields=5, max_part_size=4096)
    sent, expected = str(form.get("csrf") or ""), request.cookies.get(CSRF_COOKIE, "")
    if not (expected and secrets.compare_digest(sent, expected) and _same_origin(request)):
        return _login(request, "The sign-in form had expired or came from another site: try again.", 403, "/")
    key = str(form.get("key") or "")
    lifetime = timedelta(hours=get_settings().dashboard_session_hours)

    def sign_in() -> tuple[str, str] | None:
        started = start_session(session, key, lifetime) if key else None
        session.commit()
        return started

    started = await run_in_threadpool(sign_in)
    after = str(form.get("next") or "/")
    after = after if after.startswith("/") and not after.startswith(("//", "/\\")) else "/"
    if started is None:
        return _login(request, "That key is unknown or revoked.", after=after)
    response = RedirectResponse(after, 303)
    response.set_cookie(
        COOKIE,
        started[0],
        max_age=int(lifetime.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
    )
    response.delete_cookie(CSRF_COOKIE, path=LOGIN_PATH, httponly=True, samesite="strict")
    return response


@router.post("/ui/logout")
async def logout(request: Request, session: SessionDep) -> Response:
    """End the browser's session in the database (a copied cookie stops working too), then drop the cookie."""
    token = request.cookies.get(COOKIE)
    form = await request.form(max_files=0, max_fields=5, max_part_size=1024)
    if token:
        if not _form_allowed(request, form, token):
            return Response("sign-out refused: the form came from another site", 403, media_type="text/plain")

        def sign_out() -> None:
            end_session(session, token)
            session.commit()

        await run_in_threadpool(sign_out)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/ui/jobs.json")
def jobs_json(request: Request, session: SessionDep) -> JSONResponse:
    """What the pages poll every second to move their progress bars."""
    tenant = _tenant(request, session)
    if tenant is None:
        return JSONResponse({"detail": "sign in at /"}, status_code=401)
    jobs = _jobs(session, tenant)
    links = _job_links(session, jobs)
    body = {"jobs": [_job_json(j, links.get(j.id)) for j in jobs]}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


JOBS_STREAM_SECONDS = 600.0
"""A jobs stream ends after this; the browser's EventSource reconnects by itself, as it does when idle."""


def _jobs_payload(tenant: str) -> tuple[str, bool]:
    """The pages' jobs as JSON text (what /ui/jobs.json answers), and whether any is still queued or running."""
    with read_session() as session:
        jobs = _jobs(session, tenant)
        links = _job_links(session, jobs)
        body = [_job_json(j, links.get(j.id)) for j in jobs]
    return json.dumps({"jobs": body}), any(j["status"] not in FINISHED for j in body)


@router.get("/ui/jobs/events")
async def jobs_events(request: Request, session: SessionDep) -> Response:
    """The pages' jobs as server-sent events (`event: jobs`, the data of /ui/jobs.json): at once, then on
    every change while any job is queued or running. With nothing running the stream ends, and the browser's
    EventSource reconnects a second later (`retry`), so an idle dashboard costs one read a second, as polling
    did, and a busy one moves its bars as soon as a job reports."""
    tenant = await run_in_threadpool(_tenant, request, session)
    if tenant is None:
        return JSONResponse({"detail": "sign in at /"}, status_code=401)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        last, ends_at = None, time.monotonic() + JOBS_STREAM_SECONDS
        while time.monotonic() < ends_at:
            body, active = await run_in_threadpool(_jobs_payload, tenant)
            if body != last:
                yield sse("jobs", body)
                last = body
            if not active or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.get("/ui/models/{model_ref}", response_class=HTMLResponse)
def model_page(model_ref: str, request: Request, session: SessionDep) -> Response:
    def build(tenant: str) -> dict[str, Any]:
        row = services.resolve_model(session, model_ref, tenant)
        model = to_public(session, row)
        chain = [session.get(Model, i) for i in reversed(model.lineage)]
        made_by = dict(
            session.execute(
                select(ForgetRequest.result_model_id, ForgetRequest.id).where(
                    ForgetRequest.tenant_id == tenant, ForgetRequest.result_model_id.in_(model.lineage)
                )
            ).all()
        )
        children = session.execute(
            select(Model).where(Model.tenant_id == tenant, Model.parent_id == model.id)
        ).scalars()
        job = session.get(Job, model.job_id) if model.job_id else None
        return {
            "model": model,
            "row": row,
            "chain": chain,
            "made_by": made_by,
            "children": list(children),
            "job": job,
        }

    return _page(request, session, "model.html", build)


@router.post("/ui/models/{model_ref}/purge")
async def purge_from_page(model_ref: str, request: Request, session: SessionDep) -> Response:
    """The model page's purge button (a signed-in browser's session only): POST /models/{id}/purge."""
    token = request.cookies.get(COOKIE)
    form = await request.form(max_files=0, max_fields=5, max_part_size=1024)
    if not token or not _form_allowed(request, form, token):
        return Response("purge refused: the form came from another site", 403, media_type="text/plain")

    def run() -> tuple[str, str] | None:
        tenant = tenant_for_session(session, token)
        if tenant is None:
            return None
        model = purge.purge_model(session, model_ref, tenant)
        session.commit()
        return tenant, model.id

    try:
        done = await run_in_threadpool(run)
    except (NotFound, Conflict) as exc:
        tenant = await run_in_threadpool(tenant_for_session, session, token)
        code = 404 if isinstance(exc, NotFound) else 409
        context = {"tenant": tenant, "form_csrf": form_token(token), "message": exc.message}
        return _render(request, "not_found.html", {**context, "heading": "Not purged"}, code)
    if done is None:
        return _login(request, _signed_out_message(request), after=f"/ui/models/{model_ref}")
    return RedirectResponse(f"/ui/models/{done[1]}", status_code=303)


@router.get("/ui/forget-requests/{request_id}", response_class=HTMLResponse)
def forget_request_page(request_id: str, request: Request, session: SessionDep) -> Response:
    def build(tenant: str) -> dict[str, Any]:
        req = read_forget_request(request_id, session, tenant)
        job = session.get(Job, req.job_id) if req.job_id else None
        return {"req": req, "job": job, "names": _names(session, tenant)}

    return _page(request, session, "forget_request.html", build)


@router.get("/ui/forget-requests/{request_id}/certificate", response_class=HTMLResponse)
def certificate_page(request_id: str, request: Request, session: SessionDep) -> Response:
    """The signed certificate as a page to print; 409 (as the API) until the request is fulfilled."""

    def build(tenant: str) -> dict[str, Any]:
        return {"cert": certificates.certificate(session, request_id, tenant)}

    return _page(request, session, "certificate.html", build)


@router.get("/ui/forget-requests/{request_id}/certificate.json")
def certificate_json(request_id: str, request: Request, session: SessionDep) -> Response:
    """The same certificate as the API gives, for the page's download link (which carries only the cookie)."""
    tenant = _tenant(request, session)
    if tenant is None:
        return JSONResponse({"detail": "sign in at /"}, status_code=401)
    try:
        document = certificates.certificate(session, request_id, tenant)
    except NotFound as exc:
        return JSONResponse({"detail": exc.message}, status_code=404)
    except Conflict as exc:
        return JSONResponse({"detail": exc.message}, status_code=409)
    return JSONResponse(document, headers={"Cache-Control": "no-store"})


@router.get("/ui/evaluations/{evaluation_id}", response_class=HTMLResponse)
def evaluation_page(evaluation_id: str, request: Request, session: SessionDep) -> Response:
    def build(tenant: str) -> dict[str, Any]:
        evaluation = read_evaluation(evaluation_id, session, tenant)
        table = list_evaluations(session, tenant, reference_set_id=evaluation.reference_set_id)
        return {
            "evaluation": evaluation,
            "job": session.get(Job, evaluation.job_id),
            "table": table.data,
            "names": _names(session, tenant),
        }

    return _page(request, session, "evaluation.html", build)


@router.get("/ui/evaluations/{evaluation_id}/plots/{name}.png")
def evaluation_plot(evaluation_id: str, name: str, request: Request, session: SessionDep) -> Response:
    """The API's figure, for an <img> that can only carry the cookie."""
    tenant = _tenant(request, session)
    if tenant is None:
        return Response("sign in at /", status_code=401, media_type="text/plain")
    response = read_plot(evaluation_id, name, session, tenant)
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


@router.get("/ui/models/{model_ref}/weights")
def model_weights_download(model_ref: str, request: Request, session: SessionDep) -> Response:
    """The API's checkpoint download, for a link that can only carry the cookie."""
    tenant = _tenant(request, session)
    if tenant is None:
        return Response("sign in at /", status_code=401, media_type="text/plain")
    return weights_response(model_weights(session, model_ref, tenant), request.headers.get("if-none-match"))

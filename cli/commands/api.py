"""The API from a command: one client per command, its errors as one line, and job ids by their prefix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from cli.commands.common import EXIT_API, fail, usage

if TYPE_CHECKING:
    from client import Client, LetheError

MIN_PREFIX = 8
"""The shortest job id prefix accepted: the 8 characters the progress bar shows."""
ID_LENGTH = 36
_ID_PART = re.compile(r"[0-9a-fA-F-]+")
_SHOWN_MATCHES = 5


def describe(exc: LetheError) -> str:
    """The one-line explanation of an API error."""
    from client import InvalidRequest, RateLimited, Unauthorized

    if isinstance(exc, InvalidRequest):
        return f"invalid request: {exc.message}"
    if isinstance(exc, Unauthorized):
        return f"not authorised: {exc.message} (set LETHE_API_KEY or --api-key)"
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return f"rate limited: {exc.message} (retry in {exc.retry_after:.0f}s)"
    return exc.message


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client for the command's body; any API error ends the command with one line and status 1."""
    from client import Client, LetheError

    try:
        with Client(url, api_key=api_key) as api:
            yield api
    except LetheError as exc:
        fail(describe(exc), EXIT_API)


def resolve_job(api: Client, ref: str) -> str:
    """The whole id of the job that `ref` names: the id itself, or its first 8 or more characters.

    A prefix is looked up with GET /jobs?id_prefix=; a prefix too short or shared by several jobs is a usage
    error that says so (listing the jobs), one that starts no job is "not found". What cannot be part of an
    id at all goes to the server as it is, which answers for it.
    """
    if len(ref) >= ID_LENGTH or not _ID_PART.fullmatch(ref):
        return ref
    if len(ref) < MIN_PREFIX:
        usage(
            f"job id {ref!r} is too short: give the whole id or at least its first {MIN_PREFIX} characters "
            "(lethe jobs list shows them)"
        )
    prefix = ref.lower()
    found = api.list_jobs(id_prefix=prefix, limit=_SHOWN_MATCHES)
    matches = [job for job in found.data if job.id.startswith(prefix)]
    if len(matches) < len(found.data):
        return ref  # a server without the id_prefix filter ignored it: let it look the id up itself
    if not matches:
        fail(f"job {ref} not found (no job id starts with {prefix})", EXIT_API)
    if found.count > 1:
        shown = ", ".join(f"{job.id} ({job.kind}, {job.status})" for job in matches)
        more = f" and {found.count - len(matches)} more" if found.count > len(matches) else ""
        usage(f"job id prefix {ref!r} matches {found.count} jobs: {shown}{more}; give more of its characters")
    return matches[0].id

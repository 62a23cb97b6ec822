"""The API from a command: one client per command, its errors as one line, and job ids by their prefix."""

from __future__ import annotations

import os
import re
import sys
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


# Imported by httpx and httpcore when they are installed, for features no command uses: httpcore's support for
# trio's event loop (trio is there when selenium is, as in the development install) and httpx's own command
# line (click, pygments). Together they cost a command about a sixth of its start (benchmarks/bench_cli.py).
_UNUSED = ("trio", "httpx._main")


def import_client_lightly() -> None:
    """Import httpx and httpcore with the modules in _UNUSED left out; they stay importable afterwards.

    A module set to None in sys.modules fails to import, which both libraries handle as "not installed".
    """
    if "httpcore._synchronization" in sys.modules or "httpx" in sys.modules:
        return
    left_out = [name for name in _UNUSED if name not in sys.modules]
    for name in left_out:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import httpcore._synchronization  # noqa: F401
        import httpx  # noqa: F401
    finally:
        for name in left_out:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]


PLUGINS_SWITCH = "PYDANTIC_DISABLE_PLUGINS"
"""pydantic's documented switch: "__all__" makes it skip its search for plugins."""


@contextmanager
def without_pydantic_plugins() -> Iterator[None]:
    """pydantic skips its plugin search while this lasts, unless the user has set the switch themselves.

    Before building its first validator pydantic reads the entry points of every installed distribution
    looking for plugins (0.037 G of the 1.13 G instructions `lethe jobs list` executed, bench_cli.py); a
    command validates the API's answers only to print them. The switch is an environment variable, so it
    is set only while a command talks to the API and removed afterwards: a program that imports `client`
    itself, and whatever the command line starts, keep their plugins.
    """
    if PLUGINS_SWITCH in os.environ:
        yield
        return
    os.environ[PLUGINS_SWITCH] = "__all__"
    try:
        yield
    finally:
        if os.environ.get(PLUGINS_SWITCH) == "__all__":
            del os.environ[PLUGINS_SWITCH]


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Client]:
    """A client for the command's body; any API error ends the command with one line and status 1."""
    import_client_lightly()
    from client import Client, LetheError

    try:
        with without_pydantic_plugins(), Client(url, api_key=api_key) as api:
            yield api
    except LetheError as exc:
        fail(describe(exc), EXIT_API)


def resolve_job(api: Client, ref: str) -> str:
    """The whole id of the job that `ref` names: the id itself, or its first 8 or more characters.

    A prefix is looked up with GET /jobs?id_prefix=; a prefix too short or shared by several jobs is a usage
    error that says so (listing the jobs), one that starts no job is "not found". What cannot be part of an
    id at all goes to the server as it is, which answers for it.
    """
    if not _ID_PART.fullmatch(ref):
        return ref
    if len(ref) >= ID_LENGTH:
        return ref.lower()  # ids are stored in lower case
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

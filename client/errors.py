"""Exceptions of the client: one class per kind of failure, so callers never inspect raw HTTP answers."""

from __future__ import annotations

from dataclasses import dataclass

_LOCATIONS = ("body", "query", "path", "header", "cookie")


class LetheError(Exception):
    """Base class of every client error; `message` is the server's explanation, `status` its HTTP code."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class NotFound(LetheError):
    """404: no such model, job, evaluation, ... (or an endpoint this server does not have)."""


class Conflict(LetheError):
    """409: the request clashes with stored state, such as a taken model name or an unfinished study."""


@dataclass(frozen=True)
class FieldError:
    """One refused field: its dotted path inside the request (such as "params.epochs") and why."""

    field: str
    message: str


class InvalidRequest(LetheError):
    """422: the server refused the request's content; `errors` names every refused field."""

    def __init__(self, errors: list[FieldError]) -> None:
        text = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
        super().__init__(text or "invalid request", status=422)
        self.errors = errors

    @property
    def fields(self) -> list[str]:
        """The refused fields' dotted paths, in the server's order."""
        return [e.field for e in self.errors]


class Unauthorized(LetheError):
    """401 or 403: the API key is missing, unknown or not allowed to do this."""


class RateLimited(LetheError):
    """429: too many requests; `retry_after` is the server's suggested wait in seconds, when it gave one."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class ServerError(LetheError):
    """5xx: the server failed; the request may be retried later."""


class ConnectionFailed(LetheError):
    """The server could not be reached, or did not answer in time."""


class WaitTimeout(LetheError, TimeoutError):
    """A job did not finish within the time `Client.wait` was given."""


def field_errors(detail: object) -> list[FieldError]:
    """FastAPI-shaped `detail` entries ({"loc", "msg"}) as FieldErrors, dropping the "body"/"query" prefix."""
    if not isinstance(detail, list):
        return [FieldError("", str(detail))]
    out = []
    for entry in detail:
        if not isinstance(entry, dict):
            out.append(FieldError("", str(entry)))
            continue
        loc = [str(part) for part in entry.get("loc", [])]
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        out.append(FieldError(".".join(loc), str(entry.get("msg", entry))))
    return out

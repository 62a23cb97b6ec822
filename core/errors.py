"""Domain errors; the API maps them to 404 / 409 / 422 with a message naming the problem."""

from __future__ import annotations

from typing import Any


class LetheError(Exception):
    """Base class; `message` is what the client reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(LetheError):
    pass


class Conflict(LetheError):
    pass


class InvalidInput(LetheError):
    """Bad input in a named field (a dotted path such as "params.epochs")."""

    def __init__(self, field: str, message: str, *, extra: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.extra = extra or []

    def details(self) -> list[dict[str, Any]]:
        """FastAPI-shaped error entries: the named field first, then any further ones."""
        head = {"loc": ["body", *self.field.split(".")], "msg": self.message, "type": "value_error"}
        return [head, *self.extra]


class TooLarge(LetheError):
    """An input over a configured size: 413."""

"""`lethe certificate verify FILE`: check a deletion certificate offline, with nothing but the file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

certificate_app = typer.Typer(help="Deletion certificates.", no_args_is_help=True)


@certificate_app.command("verify")
def verify_command(
    file: Path = typer.Argument(..., help="the certificate JSON (GET /forget-requests/{id}/certificate)"),
    public_key: Path | None = typer.Option(
        None,
        "--public-key",
        help="the service's public key: PEM, or the JSON of GET /certificates/public-key; "
        "without it the key inside the certificate is used, which proves integrity but not origin",
    ),
) -> None:
    """Exit 0 when the signature holds, 1 when the certificate was modified or signed by another key, 2 when
    the files cannot be read."""
    from core.certificates import VerificationError, load_public_key, verify

    try:
        document = json.loads(file.read_text(encoding="utf-8"))
        trusted = load_public_key(public_key.read_text(encoding="utf-8")) if public_key else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, VerificationError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        key_id = verify(document, trusted)
    except VerificationError as exc:
        typer.echo(f"INVALID: {exc}")
        raise typer.Exit(1) from None
    request = document.get("forget_request") or {}
    typer.echo(
        f"valid: signed by key {key_id}"
        + (
            " (the trusted key)"
            if trusted
            else " (the key it carries: compare it with GET /certificates/public-key)"
        )
    )
    typer.echo(
        f"forget request {request.get('id')}: {request.get('n_ids')} ids, sha256 {request.get('ids_sha256')}; "
        f"parent purged: {'yes' if document.get('parent_purged') else 'no'}"
    )

"""`lethe tenants`: per-tenant settings, read and written in the database like `lethe keys`."""

from __future__ import annotations

import json

import typer

tenants_app = typer.Typer(help="Per-tenant settings.", no_args_is_help=True)


@tenants_app.command("settings")
def tenant_settings(
    tenant: str = typer.Argument(..., help="the tenant (as in `lethe keys create --tenant`)"),
    auto_purge_parents: bool | None = typer.Option(
        None,
        "--auto-purge-parents/--no-auto-purge-parents",
        help="purge a model's weights once a model unlearned from it is ready",
    ),
) -> None:
    """Print the tenant's settings as JSON, after changing those given."""
    from core.db import session_scope
    from core.purge import tenant_settings as current
    from core.purge import update_tenant_settings

    changes = {} if auto_purge_parents is None else {"auto_purge_parents": auto_purge_parents}
    with session_scope() as session:
        row = update_tenant_settings(session, tenant, changes) if changes else current(session, tenant)
        shown = {"tenant": tenant, "auto_purge_parents": bool(row.auto_purge_parents)}
    typer.echo(json.dumps(shown))

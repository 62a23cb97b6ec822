"""`lethe webhooks`: subscribe a URL to job events, list subscriptions and their deliveries, unsubscribe."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.commands.api import connect
from cli.commands.common import DEFAULT_URL, ApiKey, AsJson, Command, Group, Url
from cli.commands.output import console, fmt, print_json, table

webhooks_app = typer.Typer(
    cls=Group, no_args_is_help=True, help="Webhooks: job events POSTed, signed, to your URL."
)


@webhooks_app.command("create", cls=Command)
def webhooks_create(
    url: Annotated[str, typer.Argument(metavar="URL", help="http(s) URL that receives the events")],
    events: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            "-e",
            help="job event to send, repeatable: job.queued, job.started, job.succeeded, job.failed, "
            "job.cancelled (default: the last three)",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
    url_: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Subscribe URL to job events; prints the signing secret, which is shown only this once."""
    with connect(url_, api_key) as api:
        hook = api.create_webhook(url, events or None)
    if as_json:
        print_json(hook)
        return
    typer.echo(f"webhook {hook.id}: {', '.join(hook.events)} -> {hook.url}")
    typer.echo(f"secret (shown once; verify X-Lethe-Signature with it): {hook.secret}")


@webhooks_app.command("list", cls=Command)
def webhooks_list(as_json: AsJson = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List the webhooks, newest first."""
    with connect(url, api_key) as api:
        hooks = api.list_webhooks().data
    if as_json:
        print_json(hooks)
        return
    out = table("webhooks", ("id", "url", "events", "created"))
    for h in hooks:
        out.add_row(h.id, h.url, ", ".join(h.events), h.created_at.isoformat(timespec="seconds"))
    console().print(out)


@webhooks_app.command("deliveries", cls=Command)
def webhooks_deliveries(
    webhook_id: Annotated[str, typer.Argument(metavar="ID", help="webhook id", show_default=False)],
    status: Annotated[
        str | None, typer.Option("--status", help="pending, delivered or failed", show_default=False)
    ] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Every delivery to a webhook, newest first: its event, job, status, attempts and last answer."""
    with connect(url, api_key) as api:
        deliveries = api.list_deliveries(webhook_id, status=status).data
    if as_json:
        print_json(deliveries)
        return
    headers = ("id", "event", "job", "status", "attempts", "last answer", "next attempt")
    out = table(f"deliveries of webhook {webhook_id}", headers)
    for d in deliveries:
        out.add_row(
            d.id,
            d.event,
            d.job_id,
            d.status,
            str(d.attempts),
            fmt(d.error or d.response_status),
            d.next_attempt_at.isoformat(timespec="seconds") if d.next_attempt_at else "-",
        )
    console().print(out)


@webhooks_app.command("delete", cls=Command)
def webhooks_delete(
    webhook_id: Annotated[str, typer.Argument(metavar="ID", help="webhook id", show_default=False)],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Unsubscribe: no more events are sent, and the webhook's delivery records go."""
    with connect(url, api_key) as api:
        api.delete_webhook(webhook_id)
    typer.echo(f"deleted webhook {webhook_id}")

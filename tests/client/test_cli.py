"""The `lethe` API commands on the real app object, against the real API over HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from client import Client
from tests.client import FORGET, Stack, live_stack, serve, worker
from tests.e2e.stack import free_port

runner = CliRunner(env={"COLUMNS": "200"})

COMMANDS = {
    ("unlearn",): ["--ids", "--ids-file", "--method", "--param", "--wait", "--json", "--url", "--api-key"],
    ("evaluate",): [
        "--ids",
        "--ids-file",
        "--method",
        "--param",
        "--n-models",
        "--delta",
        "--wait",
        "--json",
    ],
    ("study",): [
        "--ids",
        "--ids-file",
        "--fraction",
        "--methods",
        "--n-models",
        "--wait",
        "--export",
        "--json",
    ],
    ("methods",): ["--json", "--url", "--api-key"],
    ("jobs", "list"): ["--json", "--url", "--api-key"],
    ("jobs", "show"): ["--json", "--url", "--api-key"],
    ("jobs", "cancel"): ["--json", "--url", "--api-key"],
    ("models", "list"): ["--json", "--url", "--api-key"],
    ("models", "show"): ["--json", "--url", "--api-key"],
    ("models", "download"): ["--output", "--json", "--url", "--api-key"],
    ("models", "upload"): ["--dataset", "--name", "--arch", "--json", "--url", "--api-key"],
    ("webhooks", "create"): ["--event", "--json", "--url", "--api-key"],
    ("webhooks", "list"): ["--json", "--url", "--api-key"],
    ("webhooks", "deliveries"): ["--status", "--json", "--url", "--api-key"],
    ("webhooks", "delete"): ["--url", "--api-key"],
}


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, lethe_home: Path) -> Iterator[Stack]:
    with live_stack(pg_url, redis_url, lethe_home) as s:
        yield s


def lethe(*args: str | Path, stack: Stack | None = None, env: dict[str, str] | None = None):
    """Run `lethe ARGS` on the real app; LETHE_URL and LETHE_API_KEY point at the stack when given."""
    full = {"LETHE_URL": stack.url, "LETHE_API_KEY": stack.api_key} if stack else {}
    return runner.invoke(app, [str(a) for a in args], env=full | (env or {}))


def assert_one_error_line(result, code: int, needle: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_help_lists_the_commands_and_each_subcommand_its_options():
    result = lethe("--help")
    assert result.exit_code == 0
    for name in ("unlearn", "evaluate", "study", "methods", "jobs", "models", "webhooks"):
        assert name in result.stdout
    for path, options in COMMANDS.items():
        result = lethe(*path, "--help")
        assert result.exit_code == 0, result.output
        for option in options:
            assert option in result.stdout, (path, option)
    assert "LETHE_URL" in lethe("unlearn", "--help").stdout
    for group, subcommands in (
        ("jobs", ("list", "show", "cancel")),
        ("models", ("list", "show", "download", "upload")),
    ):
        out = lethe(group, "--help").stdout
        assert all(s in out for s in subcommands)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["unlearn"], "Missing argument 'MODEL'"),
        (["unlearn", "tiny", "--method", "finetune"], "give the samples to forget"),
        (["unlearn", "tiny", "--method", "finetune", "--ids", "1", "--ids-file", "f"], "not both"),
        (["unlearn", "tiny", "--method", "finetune", "--ids", "1,x"], "'x' is not a sample id"),
        (
            ["unlearn", "tiny", "--method", "finetune", "--ids-file", "/no/such/file"],
            "--ids-file: cannot read",
        ),
        (
            ["unlearn", "tiny", "--method", "finetune", "--ids", "1", "--param", "epochs"],
            "expected KEY=VALUE",
        ),
        (["unlearn", "tiny", "--ids", "1"], "Missing option '--method'"),
        (["evaluate", "tiny", "--method", "none", "--ids", "1", "--n-models", "many"], "--n-models"),
        (
            ["evaluate", "tiny", "--method", "none", "--ids", "1", "--delta", "1"],
            "--delta must lie in [0, 1)",
        ),
        (["study", "tiny", "--methods", "none", "--ids", "1", "--fraction", "0.1"], "only one of them"),
        (["study", "tiny", "--methods", "none", "--fraction", "2"], "--fraction must lie between 0 and 1"),
        (["study", "tiny", "--methods", ",", "--fraction", "0.1"], "--methods: give at least one name"),
        (["study", "tiny", "--methods", "none", "--ids", "1", "--export", "/no/dir/s.zip"], "does not exist"),
        (["unlearn", "tiny", "--method", "none", "--class", "3", "--ids", "1"], "give --class or --ids"),
        (["jobs", "bogus"], "No such command 'bogus'"),
        (["models", "show", "tiny", "--bogus"], "No such option: --bogus"),
        (["models", "download", "tiny", "-o", "/no/dir/m.safetensors"], "does not exist"),
        (["models", "upload", "/no/such.pt", "--dataset", "digits"], "is not a file"),
        (
            ["models", "upload", __file__, "--dataset", "digits", "--arch", "{wide"],
            "--arch: '{wide' is not JSON",
        ),
        (["models", "upload", __file__, "--dataset", "digits", "--arch", "[4]"], "give a JSON object"),
    ],
)
def test_bad_usage_is_one_error_line_and_status_2(args, needle):
    assert_one_error_line(lethe(*args, env={"LETHE_URL": f"http://127.0.0.1:{free_port()}"}), 2, needle)


def test_api_errors_are_one_error_line_and_status_1(stack):
    assert_one_error_line(lethe("models", "show", "nope", stack=stack), 1, "model 'nope' not found")
    assert_one_error_line(lethe("jobs", "show", "nope", stack=stack), 1, "job nope not found")
    result = lethe("unlearn", "tiny", "--ids", "3,3", "--method", "finetune", stack=stack)
    assert_one_error_line(result, 1, "invalid request: forget_ids:")
    result = lethe("unlearn", "tiny", "--ids", "3", "--method", "finetune", "-p", "epochs=x", stack=stack)
    assert_one_error_line(result, 1, "params.epochs")
    assert_one_error_line(lethe("models", "list", env={"LETHE_URL": stack.url}), 1, "not authorised")
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_one_error_line(lethe("methods", "--url", nowhere), 1, f"cannot reach {nowhere}")


def test_methods_and_models_as_tables_and_json(stack):
    result = lethe("methods", "--json", stack=stack)
    assert result.exit_code == 0
    methods = {m["name"]: m for m in json.loads(result.stdout)}
    assert methods["finetune"]["params_schema"]["properties"]["lr"]["default"] == 0.001
    table = lethe("methods", stack=stack).stdout
    assert "finetune" in table and "epochs=5" in table
    auto = methods["auto"]["params_schema"]["properties"]
    assert auto["budget"]["default"] == 0.1 and auto["trials"]["default"] == 20
    assert "auto" in table and "budget=0.1" in table and "accuracy_tolerance=0.01" in table

    models = json.loads(lethe("models", "list", "--json", stack=stack).stdout)
    assert stack.model_id in [m["id"] for m in models]
    assert stack.model_id in lethe("models", "list", stack=stack).stdout
    shown = lethe(
        "models", "show", "tiny", "--url", stack.url, "--api-key", stack.api_key, env={"LETHE_URL": ""}
    )
    assert shown.exit_code == 0 and "lineage" in shown.stdout and stack.model_id in shown.stdout


def test_unlearn_waits_then_jobs_and_models_show_the_result(stack, tmp_path):
    ids_file = tmp_path / "forget.txt"
    ids_file.write_text("\n".join(map(str, FORGET)) + "\n")
    args = ["--method", "finetune", "--param", "epochs=1", "-p", "lr=0.01", "-p", "augment=false"]
    with worker():
        result = lethe(
            "unlearn",
            "tiny",
            "--ids-file",
            ids_file,
            *args,
            "--name",
            "cli-child",
            "--wait",
            "--json",
            stack=stack,
        )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    job, child = out["job"], out["model"]
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert child["name"] == "cli-child" and child["parent_id"] == stack.model_id
    assert child["lineage"] == [child["id"], stack.model_id] and child["n_forgotten"] == len(FORGET)

    with Client(stack.url, api_key=stack.api_key) as api:
        params = api.get_forget_request(job["forget_request_id"]).params
    assert params["epochs"] == 1 and params["lr"] == 0.01 and params["augment"] is False
    assert isinstance(params["epochs"], int)

    shown = json.loads(lethe("jobs", "show", job["id"], "--json", stack=stack).stdout)
    assert shown["status"] == "succeeded" and shown["metrics"]["method"] == "finetune"
    table = lethe("jobs", "show", job["id"], stack=stack).stdout
    assert "succeeded" in table and "metrics.forget_accuracy" in table

    lineage = lethe("models", "show", "cli-child", stack=stack)
    assert lineage.exit_code == 0
    assert "cli-child" in lineage.stdout and "tiny" in lineage.stdout and stack.model_id in lineage.stdout


def test_unlearn_without_wait_queues_and_jobs_cancel_stops_it(stack):
    result = lethe("unlearn", "tiny", "--ids", "1,2,3", "--method", "none", "--json", stack=stack)
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["job_id"]
    plain = lethe("unlearn", "tiny", "--ids", "4", "--method", "none", stack=stack)
    assert (
        plain.exit_code == 0 and "queued unlearning job" in plain.stdout and "lethe jobs show" in plain.stdout
    )

    cancelled = lethe("jobs", "cancel", job_id, "--json", stack=stack)
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert_one_error_line(lethe("jobs", "cancel", job_id, stack=stack), 1, "already cancelled")
    other = plain.stdout.split()[3]
    assert "cancel requested" in lethe("jobs", "cancel", other, stack=stack).stdout

    by_class = lethe("unlearn", "tiny", "--class", "3", "--method", "none", "--json", stack=stack)
    assert by_class.exit_code == 0, by_class.output
    trail = lethe("jobs", "show", json.loads(by_class.stdout)["job_id"], "--json", stack=stack)
    assert json.loads(trail.stdout)["kind"] == "unlearn"


def test_unlearn_takes_auto_with_its_params_and_evaluate_refuses_it(stack):
    result = lethe(
        "unlearn", "tiny", "--ids", "5,6", "--method", "auto", "-p", "trials=3", "--json", stack=stack
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    cancelled = lethe("jobs", "cancel", created["job_id"], "--json", stack=stack)
    assert json.loads(cancelled.stdout)["status"] == "cancelled", cancelled.output
    with Client(stack.url, api_key=stack.api_key) as api:
        request = api.get_forget_request(created["forget_request_id"])
    assert request.method == "auto" and request.params["trials"] == 3 and request.params["budget"] == 0.1
    result = lethe("unlearn", "tiny", "--ids", "5", "--method", "auto", "-p", "budget=2", stack=stack)
    assert_one_error_line(result, 1, "params.budget")
    result = lethe("evaluate", "tiny", "--ids", "5", "--method", "auto", stack=stack)
    assert_one_error_line(result, 1, "invalid request: method:")


def test_evaluate_and_study_wait_and_export(stack, tmp_path):
    ids = ",".join(map(str, FORGET))
    with worker():
        evaluated = lethe(
            "evaluate", "tiny", "--ids", ids, "--method", "none", "--n-models", "2", "--wait", stack=stack
        )
        assert evaluated.exit_code == 0, evaluated.output
        assert "epsilon-hat (delta 0.05)" in evaluated.stdout and "inf" in evaluated.stdout
        assert "censored: at least half the samples" in " ".join(evaluated.stdout.split())  # 2 models: inf
        assert "/plots/" in evaluated.stdout

        zipped = tmp_path / "study.zip"
        args = ["--ids", ids, "--methods", "none", "--n-models", "2", "--export", zipped, "--json"]
        studied = lethe("study", "tiny", *args, stack=stack)
    assert studied.exit_code == 0, studied.output
    out = json.loads(studied.stdout)
    assert out["job"]["status"] == "succeeded" and out["study"]["methods"] == ["none"]
    assert [row["method"] for row in out["evaluations"]] == ["none"]
    assert out["evaluations"][0]["epsilon_hat"] == "inf"
    with zipfile.ZipFile(zipped) as zf:
        assert "none/logits_unlearn.npy" in zf.namelist()


def test_jobs_list_prints_the_servers_jobs(stack):
    result = lethe("jobs", "list", "--json", stack=stack)
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout)
    tiny = json.loads(lethe("models", "show", "tiny", "--json", stack=stack).stdout)
    assert {"id": tiny["job_id"], "kind": "train", "status": "succeeded"}.items() <= next(
        j for j in jobs if j["id"] == tiny["job_id"]
    ).items()
    table = lethe("jobs", "list", stack=stack)
    assert table.exit_code == 0 and tiny["job_id"] in table.stdout and "succeeded" in table.stdout


@pytest.mark.parametrize("status", [404, 405])
def test_jobs_list_explains_a_server_without_the_list(status):
    """An older server answers GET /jobs with 404 (no route) or 405 (POST-only routes under /jobs)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def refuse(request):
        return JSONResponse({"detail": "no"}, status_code=status)

    with serve(Starlette(routes=[Route("/jobs", refuse)])) as url:
        result = lethe("jobs", "list", "--json", env={"LETHE_URL": url, "LETHE_API_KEY": "k"})
    assert_one_error_line(result, 1, f"has no job list (GET /jobs answered {status})")


@pytest.mark.parametrize(
    ("kind", "model_id"),
    [(":smile:", ":thumbs_up:"), ("[bold]train[/bold]", "[/]"), ("[red]", "a[link=x]b")],
)
def test_tables_print_the_servers_text_as_it_is(kind, model_id):
    """A kind or model id holding ":smile:" or rich markup ("[/]" made rich raise) is printed as the server has it."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    job = {
        "id": "0b9f7c1e-0000-4000-8000-000000000001",
        "kind": kind,
        "status": "queued",
        "progress": 0.0,
        "progress_info": {},
        "error": None,
        "attempts": 0,
        "model_id": model_id,
        "forget_request_id": None,
        "result": None,
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "updated_at": "2026-01-01T00:00:00Z",
    }

    async def jobs(request):
        return JSONResponse({"data": [job], "count": 1, "next_cursor": None})

    with serve(Starlette(routes=[Route("/jobs", jobs)])) as url:
        result = lethe("jobs", "list", env={"LETHE_URL": url, "LETHE_API_KEY": "k"})
    assert result.exit_code == 0, result.output
    assert kind in result.stdout and model_id in result.stdout
    assert "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" not in result.stdout


def test_models_download_then_upload_round_trips_the_weights(stack, tmp_path):
    """Download writes the checkpoint under the model's name with its sha256; upload makes it a model again."""
    result = lethe("models", "download", "tiny", "-o", tmp_path, stack=stack)
    assert result.exit_code == 0, result.output
    path = tmp_path / "tiny.safetensors"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.stdout.strip() == f"{path}  sha256 {digest}"
    again = json.loads(lethe("models", "download", "tiny", "-o", path, "--json", stack=stack).stdout)
    assert again == {"model": "tiny", "path": str(path), "sha256": digest, "bytes": path.stat().st_size}

    result = lethe(
        "models",
        "upload",
        path,
        "--dataset",
        "digits",
        "--name",
        "tiny-again",
        "--arch",
        '{"width": 4}',
        "--json",
        stack=stack,
    )
    assert result.exit_code == 0, result.output
    uploaded = json.loads(result.stdout)
    assert (
        uploaded["name"] == "tiny-again" and uploaded["status"] == "ready" and uploaded["made_by"] == "upload"
    )
    copy = tmp_path / "copy.safetensors"
    assert lethe("models", "download", "tiny-again", "-o", copy, stack=stack).exit_code == 0
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == digest
    result = lethe("models", "upload", path, "--dataset", "digits", "--arch", '{"width": 8}', stack=stack)
    assert_one_error_line(result, 1, "invalid request: file:")


def test_webhooks_create_list_deliveries_and_delete(stack, monkeypatch):
    """The secret is printed once; a job's events show up as deliveries; delete unsubscribes."""
    from core.settings import get_settings
    from core.webhooks import deliver_due
    from tests.e2e.stack import Receiver

    monkeypatch.setenv("LETHE_WEBHOOK_ALLOW_PRIVATE", "true")
    get_settings.cache_clear()
    receiver = Receiver()
    try:
        result = lethe("webhooks", "create", receiver.url, "-e", "job.queued", "--json", stack=stack)
        assert result.exit_code == 0, result.output
        hook = json.loads(result.stdout)
        assert hook["events"] == ["job.queued"] and len(hook["secret"]) == 64
        shown = lethe("webhooks", "create", receiver.url, stack=stack).stdout
        assert "secret (shown once" in shown
        listed = json.loads(lethe("webhooks", "list", "--json", stack=stack).stdout)
        assert hook["id"] in [h["id"] for h in listed] and all("secret" not in h for h in listed)

        created = lethe("unlearn", "tiny", "--ids", "1", "--method", "none", "--json", stack=stack)
        job_id = json.loads(created.stdout)["job_id"]
        with httpx.Client() as http:
            deliver_due(http)
        rows = json.loads(lethe("webhooks", "deliveries", hook["id"], "--json", stack=stack).stdout)
        assert [(d["event"], d["job_id"], d["status"]) for d in rows] == [("job.queued", job_id, "delivered")]
        table = lethe("webhooks", "deliveries", hook["id"], "--status", "delivered", stack=stack).stdout
        assert job_id in table and "delivered" in table
        assert_one_error_line(
            lethe("webhooks", "create", "ftp://x/", stack=stack), 1, "url: String should match pattern"
        )
        assert lethe("webhooks", "delete", hook["id"], stack=stack).exit_code == 0
        assert_one_error_line(lethe("webhooks", "deliveries", hook["id"], stack=stack), 1, "not found")
        cancel = lethe("jobs", "cancel", job_id, stack=stack)
        assert cancel.exit_code == 0, cancel.output
    finally:
        receiver.close()
        get_settings.cache_clear()


def test_logits_saves_the_models_outputs_and_scores_come_back(stack, tmp_path):
    """lethe logits runs the job and writes logits.npz; the client sends logits made elsewhere to /scores."""
    import numpy as np

    out = tmp_path / "test.npz"
    with worker():
        result = lethe("logits", "tiny", "--split", "test", "-o", out, "--json", stack=stack)
        assert result.exit_code == 0, result.output
        chosen = lethe("logits", "tiny", "--ids", "9,4", "-o", tmp_path, stack=stack)
    assert chosen.exit_code == 0, chosen.output
    assert "logits of 2 samples x 10 outputs" in chosen.stdout
    info = json.loads(result.stdout)
    assert info["path"] == str(out) and info["n_samples"] == 359 and info["n_outputs"] == 10
    assert hashlib.sha256(out.read_bytes()).hexdigest() == info["sha256"]
    with np.load(out, allow_pickle=False) as npz:
        logits, labels = npz["logits"], npz["labels"]
        assert logits.shape == (359, 10) and npz["ids"].tolist() == list(range(359))
    with np.load(tmp_path / "logits.npz", allow_pickle=False) as npz:
        assert npz["ids"].tolist() == [4, 9]
    assert_one_error_line(lethe("logits", "tiny", stack=stack), 2, "name the samples")
    assert_one_error_line(lethe("logits", "tiny", "--split", "val", stack=stack), 2, "--split: train or test")

    # The same outputs twice, as two groups of three "models": a tie, scored exactly as the library does.
    from ml.metrics.epsilon import epsilon_hat

    group = np.stack([logits[:20]] * 3)
    buf = io.BytesIO()
    np.savez(buf, reference=group, unlearned=group, labels=labels[:20])
    with Client(stack.url, api_key=stack.api_key) as api:
        score = api.score(buf.getvalue(), bootstrap=10)
        assert (
            score.results["logits"]["epsilon_hat"]
            == epsilon_hat(group, group, labels[:20]).to_json()["epsilon_hat"]
        )
        assert [s.id for s in api.list_scores().data] == [score.id]

"""The `lethe` API commands on the real app object, against the real API over HTTP."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from client import Client
from tests.client import FORGET, Stack, live_stack, worker
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
}


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with live_stack(pg_url, redis_url, tmp_path_factory.mktemp("cli") / "home") as s:
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
    for name in ("unlearn", "evaluate", "study", "methods", "jobs", "models"):
        assert name in result.stdout
    for path, options in COMMANDS.items():
        result = lethe(*path, "--help")
        assert result.exit_code == 0, result.output
        for option in options:
            assert option in result.stdout, (path, option)
    assert "LETHE_URL" in lethe("unlearn", "--help").stdout
    for group, subcommands in (("jobs", ("list", "show", "cancel")), ("models", ("list", "show"))):
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


def test_jobs_list_explains_a_server_without_the_list(stack):
    has_list = httpx.get(f"{stack.url}/jobs", headers={"X-API-Key": stack.api_key}).status_code == 200
    result = lethe("jobs", "list", "--json", stack=stack)
    if has_list:
        assert result.exit_code == 0 and isinstance(json.loads(result.stdout), list)
    else:
        assert_one_error_line(result, 1, "has no job list (GET /jobs answered 404)")

"""The README's walkthrough, run as written: every code block marked `<!-- walkthrough -->` is taken from the
README and run, command by command, against `lethe up` on a free port in a fresh folder.

What the test changes, and only that:
- the port: `localhost:8000` and `127.0.0.1:8000` become the free port (LETHE_URL points the CLI there);
- placeholders: `<job_id>`, `<result.model_id>` ... take the newest value of that key (dotted: nested) in
  the JSON earlier commands printed; a command with a placeholder runs once every job seen so far has
  ended (as the README says: "once its status is succeeded"), and each of those jobs must have succeeded;
- settings only: the demo model is small (LETHE_DEMO_EPOCHS, LETHE_DEMO_WIDTH) and the worker runs two jobs
  at once, so that the walkthrough takes minutes (about 3 on an idle 2-core machine).

Each shell command must exit 0, an expected output written as JSON in a comment line after it must match,
the certificate must verify against the service's key, and a Ctrl-C at the end must stop everything `lethe
up` started, with no ERROR in its log.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_supervisor import GONE_WITHIN_S, LetheUp, _left
from tests.e2e.stack import wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- walkthrough -->"
PLACEHOLDER = re.compile(r"<([a-z_][a-z_.]*)>")
COMMAND_TIMEOUT_S = 900.0
"""A safety net per command (the study trains 40 models), not a bound: the machine may be loaded."""
QUICK = {
    "LETHE_DEMO_EPOCHS": "1",
    "LETHE_DEMO_WIDTH": "4",
    "LETHE_WORKER_CONCURRENCY": "2",  # the 40 small runs of the evaluation and the study, two at a time,
    "LETHE_TORCH_THREADS": "1",  # one core each
}
"""A small demo (so reference models and retrains are small too) and both cores busy: commands unchanged."""


@dataclass
class Command:
    text: str
    expect: Any = None
    """The JSON a comment line right after the command shows, when it shows JSON."""


@dataclass
class Block:
    language: str
    commands: list[Command] = field(default_factory=list)
    source: str = ""


def walkthrough_blocks(markdown: str) -> list[Block]:
    """The fenced blocks that follow a walkthrough mark, split into commands (a shell command is a line at
    column 0 with the indented lines after it; a Python block is one command)."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.strip() != MARK:
            continue
        fence = lines[i + 1]
        assert fence.startswith("```"), (
            f"README line {i + 2}: a walkthrough mark must come right before a block"
        )
        end = lines.index("```", i + 2)
        body = lines[i + 2 : end]
        block = Block(language=fence[3:].strip(), source="\n".join(body) + "\n")
        if block.language == "python":
            block.commands.append(Command(block.source))
        else:
            for raw in body:
                if not raw.strip():
                    continue
                if raw.startswith("#"):
                    comment = raw.lstrip("# ").strip()
                    if block.commands and comment.startswith("{"):
                        block.commands[-1].expect = json.loads(comment)
                    continue
                if raw[0].isspace():
                    block.commands[-1].text += "\n" + raw
                else:
                    block.commands.append(Command(raw))
        blocks.append(block)
    return blocks


def test_the_walkthrough_blocks_are_found_and_split_into_commands():
    """The extraction itself: without it the end-to-end test below could pass on nothing."""
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    assert [b.language for b in blocks] == ["sh", "sh", "python"]
    curl, cli, _python = blocks
    health = next(c for c in curl.commands if c.text.endswith("/health"))
    assert health.expect == {"status": "ok", "database": "ok", "broker": "ok"}
    unlearn = next(c for c in curl.commands if "POST" in c.text)
    assert unlearn.text.count("\n") == 2 and unlearn.text.rstrip().endswith("}'")
    assert any(c.text.startswith("lethe certificate verify") for c in curl.commands)
    assert any(c.text.startswith("seq ") and "forget.txt" in c.text for c in cli.commands)
    # forget.txt is made in the walkthrough before anything reads it
    texts = [c.text for c in cli.commands]
    made = next(i for i, t in enumerate(texts) if "> forget.txt" in t)
    assert all(i > made for i, t in enumerate(texts) if "--ids-file forget.txt" in t)


class Shell:
    """One bash process for the whole walkthrough (so `export` and `alias` carry over), fed one command at a
    time; returns each command's output and exit status."""

    END = "__walkthrough_rc__="

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.run("shopt -s expand_aliases", 30)  # bash reads aliases from stdin only when asked to

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, command: str, timeout: float) -> tuple[int, str]:
        assert self.proc.stdin is not None
        # Braces keep `export` and `alias` in this shell; /dev/null keeps a command off the script's stdin.
        self.proc.stdin.write(f"{{\n{command}\n}} </dev/null\nprintf '\\n{self.END}%s\\n' $?\n")
        self.proc.stdin.flush()
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{command!r} still running after {timeout:g} s:\n{''.join(out)}"
                ) from None
            if line is None:
                raise AssertionError(f"the shell ended during {command!r}:\n{''.join(out)}")
            if line.startswith(self.END):
                text = "".join(out)
                return int(line[len(self.END) :]), text[:-1] if text.endswith("\n") else text
            out.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
    elif prefix:
        out[prefix[:-1]] = value
    return out


class Walkthrough:
    """Runs the README's commands and keeps what they printed, to fill the placeholders of later ones."""

    def __init__(self, shell: Shell, http: httpx.Client, port: int, logs: Any) -> None:
        self.shell, self.http, self.port, self.logs = shell, http, port, logs
        self.values: dict[str, Any] = {}
        self.jobs: list[str] = []

    def localize(self, text: str) -> str:
        return text.replace("localhost:8000", f"localhost:{self.port}").replace(
            "127.0.0.1:8000", f"127.0.0.1:{self.port}"
        )

    def fill(self, text: str) -> str:
        names = PLACEHOLDER.findall(text)
        if not names:
            return text
        self.wait_for_jobs()
        for name in names:
            assert name in self.values, (
                f"{name} was printed by no command before {text!r}: {sorted(self.values)}"
            )
            text = text.replace(f"<{name}>", str(self.values[name]))
        return text

    def wait_for_jobs(self) -> None:
        """Every job the walkthrough has started so far ends, and succeeds."""
        for job_id in self.jobs:
            job = wait_for(
                lambda job_id=job_id: (
                    (j := self.http.get(f"/jobs/{job_id}").json())["status"]
                    in ("succeeded", "failed", "cancelled")
                    and j
                ),
                COMMAND_TIMEOUT_S,
                f"job {job_id}",
                self.logs,
            )
            assert job["status"] == "succeeded", job

    def shell_command(self, command: Command) -> str:
        text = self.fill(self.localize(command.text))
        started = time.monotonic()
        rc, out = self.shell.run(text, COMMAND_TIMEOUT_S)
        print(f"[{time.monotonic() - started:6.1f} s] {text}", flush=True)
        assert rc == 0, f"{text!r} exited {rc}:\n{out}\n--- lethe up:\n{self.logs()}"
        self.learn(out)
        if command.expect is not None:
            assert json.loads(out) == command.expect, (text, out)
        return out

    def python_block(self, source: str, cwd: Path, env: dict[str, str]) -> str:
        done = subprocess.run(
            [sys.executable, "-c", self.localize(source)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        assert done.returncode == 0, f"the Python block exited {done.returncode}:\n{done.stdout}{done.stderr}"
        return done.stdout

    def learn(self, out: str) -> None:
        try:
            printed = json.loads(out)
        except ValueError:
            return
        flat = _flatten(printed)
        self.values.update(flat)
        if "job_id" in flat and flat["job_id"] not in self.jobs:
            self.jobs.append(flat["job_id"])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a safety net for a loaded machine; each command has its own
def test_the_readme_walkthrough_works_as_written(tmp_path):
    blocks = walkthrough_blocks(README.read_text(encoding="utf-8"))
    up = LetheUp(tmp_path / "var", tmp_path / "up.log", extra_env=QUICK)  # ./var of the shell's folder
    shell = None
    try:
        up.wait_healthy()
        started = up.logs()
        assert f"dashboard at http://127.0.0.1:{up.port}/ : sign in with the API key in " in started, started
        assert str(tmp_path / "var" / "api-key") in started
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LETHE_")},
            "LETHE_URL": f"http://127.0.0.1:{up.port}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(README.parent),
        }
        shell = Shell(tmp_path, env)
        run = Walkthrough(shell, up.http, up.port, up.logs)
        began = time.monotonic()
        outputs: dict[str, str] = {}
        for block in blocks:
            if block.language == "python":
                outputs["python"] = run.python_block(block.source, tmp_path, env)
                continue
            assert block.language == "sh", block.language
            for command in block.commands:
                outputs[command.text] = run.shell_command(command)
        run.wait_for_jobs()
        print(f"walkthrough: {time.monotonic() - began:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)

        demo = json.loads(
            next(v for k, v in outputs.items() if k.startswith("curl -s localhost:8000/models/demo"))
        )
        assert demo["arch"]["width"] == 4 and demo["recipe"]["epochs"] == 1, demo  # LETHE_DEMO_*

        verified = next(v for k, v in outputs.items() if k.startswith("lethe certificate verify"))
        assert verified.startswith("valid: signed by key") and "(the trusted key)" in verified, verified
        assert len((tmp_path / "forget.txt").read_text().split()) == 29
        assert (tmp_path / "forgot.safetensors").stat().st_size > 1000
        with zipfile.ZipFile(tmp_path / "study.zip") as study:
            assert study.namelist(), "the study's export is empty"
        assert "succeeded 1.0" in outputs["python"], outputs["python"]
        for status in ("failed", "cancelled"):
            left = up.http.get("/jobs", params={"status": status}).json()
            assert left["data"] == [], left

        pids = up.processes()
        before = len(up.log.read_text(errors="replace"))
        os.killpg(up.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal of `make run`
        up.proc.wait(timeout=GONE_WITHIN_S)
        deadline = time.monotonic() + GONE_WITHIN_S
        while _left(pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _left(pids), _left(pids)
        log = up.log.read_text(errors="replace")
        assert "ERROR" not in log, log[before:] if "ERROR" in log[before:] else log
    finally:
        if shell is not None:
            shell.close()
        up.close()


def test_placeholders_wait_for_the_jobs_and_take_the_newest_value():
    class Jobs:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def get(self, path: str) -> Any:
            self.asked.append(path)
            return httpx.Response(200, json={"status": "succeeded"})

    http = Jobs()
    run = Walkthrough(shell=None, http=http, port=41234, logs=lambda: "")
    run.learn(json.dumps({"job_id": "j1", "forget_request_id": "f1"}))
    run.learn(json.dumps({"id": "j1", "status": "succeeded", "result": {"model_id": "m2"}}))
    run.learn("not JSON: a table")
    command = "curl -s localhost:8000/models/<result.model_id>/weights?x=<forget_request_id>"
    assert run.fill(run.localize(command)) == "curl -s localhost:41234/models/m2/weights?x=f1"
    assert http.asked == ["/jobs/j1"]
    assert shlex.split(run.fill("lethe jobs show <job_id>")) == ["lethe", "jobs", "show", "j1"]
    with pytest.raises(AssertionError, match="evaluation_id was printed by no command"):
        run.fill("curl -s localhost:8000/evaluations/<evaluation_id>")

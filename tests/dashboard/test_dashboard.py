"""The dashboard at GET /: sign-in by cookie, only the tenant's own objects, and live progress in a browser.

Objects are created over HTTP and their jobs run in this process by the worker's own runner (drain);
the browser test serves the real app with uvicorn and drives Debian's headless Chromium with selenium.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.routes.dashboard import number
from core import jobs as job_service
from core import services
from core.bootstrap import ensure_digits
from core.db import session_scope
from tests.client import serve
from tests.utils import drain, new_key
from worker.runner import run_job

FORGET = list(range(0, 600, 20))  # 30 digits training samples
TINY_RECIPE = {"epochs": 1, "lr": 0.05, "batch_size": 64}
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@dataclass(frozen=True)
class Seeded:
    model_id: str
    child_id: str
    request_id: str
    evaluation_id: str
    other_evaluation_id: str | None


def _post(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(path, json=body)
    assert r.status_code in (201, 202), r.text
    return r.json()


def _evaluate(client: TestClient, method: str) -> str:
    body = {"model_id": "tiny", "forget_ids": FORGET, "method": method, "n_models": 2}
    return _post(client, "/evaluations", body)["evaluation_id"]


def seed(client: TestClient, *, second_method: str | None = "retrain") -> Seeded:
    """A trained "tiny", its unlearned child "tiny-forgot", and scored evaluations on one reference set."""
    with session_scope() as session:
        ensure_digits(session)
    body = {"name": "tiny", "dataset": "digits", "arch": {"width": 4}, "recipe": TINY_RECIPE}
    model_id = _post(client, "/models", body)["model_id"]
    assert drain() == 1
    request = {
        "model_id": "tiny",
        "forget_ids": [3, 17, 42],
        "method": "none",
        "name": "tiny-forgot",
        "requested_by": "privacy@example.com",
    }
    request_id = _post(client, "/unlearn", request)["forget_request_id"]
    evaluation_id = _evaluate(client, "none")
    other_id = _evaluate(client, second_method) if second_method else None
    drain()
    child_id = client.get(f"/forget-requests/{request_id}").json()["result_model_id"]
    assert child_id, "the unlearn job did not produce a model"
    return Seeded(model_id, child_id, request_id, evaluation_id, other_id)


def anonymous(client: TestClient) -> TestClient:
    """A client of the same app without the API key header: only a cookie can sign it in."""
    return TestClient(client.app)


def text_of(html: str) -> str:
    """The page's visible text with tags dropped and white space collapsed, for plain assertions."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def sign_in(browser: TestClient, key: str, *, next_page: str = "/") -> Any:
    """Fill in and POST the sign-in form as a browser does: the CSRF token comes from the form's page."""
    form = browser.get(next_page)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    after = re.search(r'name="next" value="([^"]*)"', form.text).group(1)
    return browser.post("/ui/login", data={"key": key, "csrf": csrf, "next": after}, follow_redirects=False)


def test_sign_in_posts_the_key_once_and_the_cookie_carries_only_a_session(client):
    key = client.headers["X-API-Key"]
    browser = anonymous(client)

    page = browser.get("/")
    assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
    assert (
        re.search(r'<form[^>]*method="post"[^>]*action="/ui/login"', page.text) and 'name="key"' in page.text
    )
    assert "unknown" not in page.text and "lethe_session" not in browser.cookies

    wrong = sign_in(browser, "lethe_wrong")
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text and 'name="key"' in wrong.text
    assert "lethe_session" not in wrong.headers.get("set-cookie", "")

    assert browser.get("/ui/jobs.json").status_code == 401
    assert browser.get("/ui/models/tiny").status_code == 401

    signed = sign_in(browser, key)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"]
    token = re.match(r"lethe_session=([^;]+);", cookie).group(1)
    assert key not in cookie and len(token) >= 40
    assert (
        "HttpOnly" in cookie
        and "SameSite=strict" in cookie
        and "Path=/" in cookie
        and "Max-Age=43200" in cookie
    )

    home = browser.get("/")
    assert home.status_code == 200 and "Overview" in home.text and "local" in home.text
    assert key not in home.text and token not in home.text
    assert "no-store" in home.headers["cache-control"]
    assert "script-src 'nonce-" in home.headers["content-security-policy"]
    assert browser.get("/ui/jobs.json").json() == {"jobs": []}

    # The old way in is closed: a key in the address signs nobody in.
    stranger = anonymous(client)
    old = stranger.get("/", params={"key": key}, follow_redirects=False)
    assert old.status_code == 400 and "never accepted" in old.text and "lethe_session" not in stranger.cookies

    # The header the API takes works on the pages too, and an empty key is no key.
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"X-API-Key": ""}).status_code == 401


def test_pages_show_jobs_lineage_audit_trail_and_evaluations(client):
    s = seed(client)
    names = {m["id"]: m["name"] for m in client.get("/models").json()["data"]}
    assert names[s.child_id] == "tiny-forgot"

    home = client.get("/")
    assert home.status_code == 200
    page = text_of(home.text)
    for expected in ("tiny", "tiny-forgot", "privacy@example.com", "retrain", "none", "digits", "∞"):
        assert expected in page, expected
    jobs = client.get("/jobs", params={"limit": 500}).json()["data"]
    top = [j for j in jobs if j["kind"] in ("train", "unlearn", "evaluate", "reference")]
    rows = re.findall(r'<tr data-job-id="([0-9a-f-]{36})" data-status="(\w+)"', home.text)
    assert {job_id for job_id, _ in rows} <= {j["id"] for j in jobs}
    assert {j["id"] for j in top} <= {job_id for job_id, _ in rows}
    assert all(status == "succeeded" for _, status in rows)
    assert f'href="/ui/models/{s.child_id}"' in home.text
    assert f'href="/ui/forget-requests/{s.request_id}"' in home.text
    assert f'href="/ui/evaluations/{s.evaluation_id}"' in home.text
    assert re.search(r'<progress max="1" value="1.0">', home.text)

    live = client.get("/ui/jobs.json").json()["jobs"]
    assert {j["id"] for j in live} == {job_id for job_id, _ in rows}
    train = next(j for j in live if j["kind"] == "train")
    assert train["status"] == "succeeded" and train["percent"] == 100
    assert train["href"] == f"/ui/models/{s.model_id}" and "epoch 1/1" in train["detail"]

    lineage = client.get(f"/ui/models/{s.child_id}")
    assert lineage.status_code == 200
    chain = re.search(r'<ol class="lineage" id="lineage">(.*?)</ol>', lineage.text, re.S).group(1)
    assert re.findall(r'href="/ui/models/([0-9a-f-]{36})"', chain) == [s.model_id, s.child_id]
    assert f'href="/ui/forget-requests/{s.request_id}"' in chain
    assert "3 forgotten" in text_of(chain)
    assert client.get("/ui/models/tiny").status_code == 200  # by name, like the API
    parent = client.get(f"/ui/models/{s.model_id}").text
    assert "Derived from this model" in parent and f'href="/ui/models/{s.child_id}"' in parent

    audit = client.get(f"/forget-requests/{s.request_id}").json()
    trail = client.get(f"/ui/forget-requests/{s.request_id}")
    assert trail.status_code == 200
    body = re.search(r'<tbody id="audit">(.*?)</tbody>', trail.text, re.S).group(1)
    events = re.findall(r"<tr>.*?</tr>", body, re.S)
    assert len(events) == len(audit["events"]) >= 3
    for row, event in zip(events, audit["events"], strict=True):
        assert event["event"] in row and event["object_type"] in row
    assert "privacy@example.com" in trail.text and audit["ids_sha256"] in trail.text

    evaluation = client.get(f"/evaluations/{s.other_evaluation_id}").json()
    shown = client.get(f"/ui/evaluations/{s.other_evaluation_id}")
    assert shown.status_code == 200
    eps = number(evaluation["results"]["epsilon_hat"])
    assert re.search(r'class="epsilon-hat">' + re.escape(eps) + "<", shown.text), eps
    plots = re.findall(r'<img id="plot-[\w-]+" src="([^"]+)"', shown.text)
    assert plots == [
        f"/ui/evaluations/{s.other_evaluation_id}/plots/epsilon-delta.png",
        f"/ui/evaluations/{s.other_evaluation_id}/plots/histograms.png",
    ]
    for src in plots:
        png = anonymous_with_cookie(client).get(src)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert png.headers["content-type"] == "image/png"
    table = re.search(r'<table id="side-by-side">(.*?)</table>', shown.text, re.S).group(1)
    side = client.get("/evaluations", params={"reference_set_id": evaluation["reference_set_id"]}).json()
    assert re.findall(r'href="/ui/evaluations/([0-9a-f-]{36})">(\w+)<', table) == [
        (row["evaluation_id"], row["method"]) for row in side["data"]
    ]
    assert [r["method"] for r in side["data"]] == ["none", "retrain"]
    assert client.get(f"/ui/evaluations/{s.evaluation_id}/plots/pie.png").status_code == 404


def anonymous_with_cookie(client: TestClient) -> TestClient:
    """A browser-like client signed in by cookie only, as an <img> request would be."""
    browser = anonymous(client)
    assert sign_in(browser, client.headers["X-API-Key"]).status_code == 303
    return browser


def test_another_tenant_sees_nothing_of_locals_objects(client):
    s = seed(client, second_method=None)
    other = {"X-API-Key": new_key("other")}

    home = client.get("/", headers=other)
    assert home.status_code == 200 and "other" in home.text
    page = text_of(home.text)
    assert "tiny" not in page and "privacy@example.com" not in page
    for what in ("jobs", "models", "forget requests", "evaluations"):
        assert f"No {what} yet." in page
    assert client.get("/ui/jobs.json", headers=other).json() == {"jobs": []}
    for path in (
        f"/ui/models/{s.model_id}",
        "/ui/models/tiny",
        f"/ui/forget-requests/{s.request_id}",
        f"/ui/evaluations/{s.evaluation_id}",
        f"/ui/evaluations/{s.evaluation_id}/plots/epsilon-delta.png",
    ):
        r = client.get(path, headers=other)
        assert r.status_code == 404, path
        assert "tiny-forgot" not in r.text and "privacy@example.com" not in r.text, path
    assert client.get(f"/ui/models/{s.model_id}").status_code == 200  # still local's own


# ---- the browser ---------------------------------------------------------------------------------


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium through its chromedriver; nothing is downloaded."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} missing: apt-get install -y chromium chromium-driver "
            "(.ci/run installs them)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="lethe-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1280,1400",
        ):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LETHE_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.slow
def test_the_browser_shows_a_figure_and_a_running_jobs_progress_live(client, tmp_path):
    s = seed(client, second_method=None)
    key = client.headers["X-API-Key"]
    with serve() as url, chromium() as driver:
        driver.get(f"{url}/")
        driver.find_element("css selector", 'input[name="key"]').send_keys(key)
        driver.find_element("css selector", 'form.login button[type="submit"]').click()
        until(lambda: driver.find_elements("id", "models"), 15, "the overview after signing in")
        assert driver.current_url == f"{url}/" and key not in driver.current_url
        assert driver.find_element("css selector", "h1").text == "Overview"
        assert "tiny-forgot" in driver.find_element("id", "models").text
        cookie = driver.get_cookie("lethe_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and key not in cookie["value"]

        driver.find_element("css selector", f'a[href="/ui/evaluations/{s.evaluation_id}"]').click()
        width = until(
            lambda: driver.execute_script(
                "const img = document.getElementById('plot-epsilon-delta');"
                "return img && img.complete ? img.naturalWidth : 0;"
            ),
            15,
            "the epsilon-delta figure to load",
        )
        assert width > 100
        driver.save_screenshot(str(artifacts_dir(tmp_path) / "dashboard-evaluation.png"))

        driver.get(f"{url}/")
        driver.execute_script("window.notReloaded = true;")
        with session_scope() as session:
            job, _model = services.create_training(
                session,
                tenant_id="local",
                name="long",
                dataset_ref="digits",
                arch={"width": 4},
                recipe={"epochs": 120, "lr": 0.05, "batch_size": 64},
            )
            job_id = job.id
        runner = threading.Thread(target=run_job, args=(job_id,), name="long-training", daemon=True)
        runner.start()
        try:
            row = f'tr[data-job-id="{job_id}"]'

            def progress() -> float:
                found = driver.find_elements("css selector", f"{row} progress")
                return float(found[0].get_property("value")) if found else 0.0

            first = until(progress, 20, "the new job's row to show progress")
            until(lambda: progress() > first, 20, "the progress bar to move")
            cells = driver.find_element("css selector", row).text
            assert "running" in cells and "epoch" in cells and "ETA" in cells, cells
            assert driver.execute_script("return window.notReloaded === true;"), "the page was reloaded"
            shot = artifacts_dir(tmp_path) / "dashboard.png"
            driver.save_screenshot(str(shot))
            print(f"\ndashboard screenshot: {shot}")
        finally:
            with session_scope() as session:
                job_service.cancel(session, job_id, "local")
            runner.join(timeout=30)
        assert not runner.is_alive()
        until(
            lambda: "cancelled" in driver.find_element("css selector", row).text,
            10,
            "the cancelled status to reach the page",
        )
        driver.find_element("css selector", 'form.sign-out button[type="submit"]').click()
        until(
            lambda: driver.find_elements("css selector", "form.login"),
            15,
            "the sign-in form after signing out",
        )
        assert driver.get_cookie("lethe_session") is None

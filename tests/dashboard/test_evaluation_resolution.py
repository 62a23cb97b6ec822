"""The evaluation page says in words when epsilon-hat is censored and shows its interval over models."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np

from core.db import session_scope
from core.tables import Evaluation
from tests.utils import add_ready_model
from worker.evaluation import save_array, score_runs

FORGET = list(range(0, 300, 10))


def _runs(prefix: str, outputs: list[np.ndarray]) -> list[SimpleNamespace]:
    acc = {"retain_accuracy": 0.9, "forget_accuracy": 0.8, "test_accuracy": 0.85, "wall_seconds": 2.0}
    return [
        SimpleNamespace(id=f"{prefix}{i}", outputs=save_array(f"runs/{prefix}{i}.npy", out), metrics=acc)
        for i, out in enumerate(outputs)
    ]


def _scored(client, n_models: int, shift: float) -> tuple[str, dict]:
    """An evaluation whose results are those of n_models synthetic models per group, the unlearned shifted."""
    with session_scope() as session:
        add_ready_model(session, "m1")
    r = client.post(
        "/evaluations", json={"model_id": "m1", "forget_ids": FORGET, "method": "none", "n_models": n_models}
    )
    assert r.status_code == 202, r.text
    rng = np.random.default_rng(0)
    labels = np.zeros(len(FORGET), dtype=np.int64)
    refs = _runs("r", [rng.normal(size=(len(FORGET), 3)).astype(np.float32) for _ in range(n_models)])
    unls = _runs(
        "u",
        [
            (rng.normal(size=(len(FORGET), 3)) + np.array([shift, 0.0, 0.0])).astype(np.float32)
            for _ in range(n_models)
        ],
    )
    results, *_ = score_runs("classification", labels, refs, unls, 0.05)
    with session_scope() as session:
        session.get(Evaluation, r.json()["evaluation_id"]).results = results
    return r.json()["evaluation_id"], results


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_censored_evaluation_says_why_and_what_would_resolve_it(client):
    evaluation_id, results = _scored(client, 3, 25.0)
    assert results["epsilon_hat"] == "inf" and results["censored"] is True
    page = client.get(f"/ui/evaluations/{evaluation_id}")
    assert page.status_code == 200
    note = text_of(re.search(r'<p id="resolution-note" class="censored">(.*?)</p>', page.text, re.S).group(1))
    assert "Censored: at least half the samples are at the ceiling or infinite" in note
    assert "above 0.615" in note
    resolution = text_of(re.search(r'<dd id="resolution">(.*?)</dd>', page.text, re.S).group(1))
    assert "with 3 reference and 3 unlearned models no finite ε can exceed 0.615" in resolution
    assert re.search(r'<span id="ci95-models">\[∞, ∞\]</span>', page.text)
    assert "two groups of 3 retrained models score about" in text_of(page.text)
    table = re.search(r'<table id="side-by-side">(.*?)</table>', page.text, re.S).group(1)
    assert "(censored)" in table and "0.615" in table
    home = text_of(client.get("/").text)
    assert "[∞, ∞] censored" in home


def test_a_resolved_evaluation_shows_its_interval_and_smooth_estimate(client):
    evaluation_id, results = _scored(client, 8, 0.3)
    assert results["censored"] is False
    page = client.get(f"/ui/evaluations/{evaluation_id}").text
    assert '<p id="resolution-note" class="muted">Resolved' in page
    low, high = results["epsilon_hat_ci95_models"]
    assert f'<span id="ci95-models">[{low:.3f}, {high:.3f}]</span>' in page
    assert re.search(r'<dd id="smooth">' + re.escape(f"{results['epsilon_hat_smooth']:.3f}"), page)
    assert "the spread of per-sample values (not the uncertainty of ε̂)" in text_of(page)

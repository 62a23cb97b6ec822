"""bench_auto's cache: a stored auto search is read back only for the settings and the space it searched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ml.methods import auto
from ml.methods.params import AutoParams
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import bench_auto


def test_a_search_over_a_widened_space_is_not_read_back_from_one_over_the_narrower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = bench_auto.Cache(str(tmp_path), {"dataset": "digits"})
    settings = AutoParams(trials=4)
    before = cache.path(".json", fraction=0.1, **bench_auto.search_key(settings))
    assert before == cache.path(".json", fraction=0.1, **bench_auto.search_key(AutoParams(trials=4)))
    assert before != cache.path(".json", fraction=0.1, **bench_auto.search_key(AutoParams(trials=5)))
    wider = {**auto.SPACE, "noise_reset": {**auto.SPACE["noise_reset"], "forget_target": auto.Knob(0.5, 2.0)}}
    monkeypatch.setattr(bench_auto, "SPACE", wider)
    assert cache.path(".json", fraction=0.1, **bench_auto.search_key(settings)) != before

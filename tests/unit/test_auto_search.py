"""The auto search: proxies drawn like the forget set, proposals cut to the budget, the winner as documented."""

from __future__ import annotations

import numpy as np
import pytest

from ml.methods.auto import (
    FIRST,
    INFEASIBLE,
    SPACE,
    TrialRecord,
    TrialScore,
    choose,
    defaults_trial,
    draw_proxies,
    fit_to_budget,
    search,
)
from ml.methods.cost import Workload, cost
from ml.methods.params import AutoParams
from ml.specs import Recipe

WORK = Workload(n_retain=1400, n_forget=30, recipe=Recipe(epochs=30))


def test_proxies_match_the_forget_sets_size_and_class_mix_and_repeat_for_a_seed() -> None:
    labels = np.repeat(np.arange(10), 100)
    forget = np.array([0, 1, 2, 150, 151, 999])  # classes 0, 0, 0, 1, 1, 9
    pool = np.setdiff1d(np.arange(1000), forget)
    proxies = draw_proxies(labels, forget, pool, 3, seed=7)
    for proxy in proxies:
        assert len(proxy) == len(forget)
        assert (
            np.bincount(labels[proxy], minlength=10).tolist()
            == np.bincount(labels[forget], minlength=10).tolist()
        )
        assert np.isin(proxy, pool).all() and len(np.unique(proxy)) == len(proxy)
    assert not np.array_equal(proxies[0], proxies[1])
    again = draw_proxies(labels, forget, pool, 3, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(proxies, again, strict=True))


def test_a_proposal_is_cut_to_the_budget_or_refused() -> None:
    full = {"epochs": 10, "lr": 0.01}
    cut = fit_to_budget("finetune", full, WORK, 0.1)
    assert cut == {"epochs": 3, "lr": 0.01}  # 3 of a 30-epoch retrain's passes is 0.1
    assert fit_to_budget("finetune", full, WORK, 0.02) is None  # one epoch is 1/30 > 0.02
    ssd = fit_to_budget("ssd", {"alpha": 10.0, "dampening": 1.0, "full_fraction": 1.0}, WORK, 0.01)
    assert ssd is not None and 0 < ssd["full_fraction"] < 1
    assert cost("ssd", ssd, WORK) <= 0.01
    assert fit_to_budget("gradient_ascent", {"epochs": 20, "lr": 1e-3}, WORK, 0.1) == {
        "epochs": 20,
        "lr": 1e-3,
    }


def test_a_climb_that_does_not_fit_beside_a_whole_repair_gets_the_largest_share_that_does() -> None:
    """The Fashion-MNIST subset's shape: 900 retain, 100 forget, 10 epochs. Two climbing passes (228 rows
    each: 100 forget, four retain batches of 32) leave 444 of the 900 passes 0.1 buys: a share of 0.49."""
    work = Workload(n_retain=900, n_forget=100, recipe=Recipe(epochs=10))
    climb = {"epochs": 3, "lr": 0.005, "forget_epochs": 2, "forget_lr": 0.01, "repair_share": 1.0}
    cut = fit_to_budget("noise_reset", climb, work, 0.1)
    assert cut == {**climb, "epochs": 1, "repair_share": 0.49}
    assert cost("noise_reset", cut, work) <= 0.1 < cost("noise_reset", {**cut, "repair_share": 0.5}, work)
    # Three passes leave 216 rows: under a quarter of the retain set, the least repair the search runs.
    assert fit_to_budget("noise_reset", {**climb, "forget_epochs": 3}, work, 0.1) is None
    # A share that fits is kept, and one epoch at the whole share is not cut.
    assert fit_to_budget("noise_reset", {**climb, "epochs": 1, "repair_share": 0.3}, work, 0.1) == {
        **climb,
        "epochs": 1,
        "repair_share": 0.3,
    }
    alone = {"epochs": 1, "lr": 0.005, "forget_epochs": 0, "repair_share": 1.0}
    assert fit_to_budget("noise_reset", alone, work, 0.1) == alone


def test_the_search_proposes_climbs_weighted_either_way_and_keeps_each_within_the_budget() -> None:
    """A landscape where noise_reset is best with two passes weighted by rank: the search, which starts from
    the defaults (no climb), finds it and every trial it ran fits the budget."""
    work = Workload(n_retain=900, n_forget=100, recipe=Recipe(epochs=10))
    ran: list[dict] = []

    def evaluate(method: str, params: dict) -> TrialScore:
        ran.append(params)
        off = abs(params["forget_epochs"] - 2) + (0.0 if params["forget_weighting"] == "rank" else 1.0)
        return TrialScore(1.0 + off, 0.0)

    result = search(evaluate, work, AutoParams(trials=30), methods=["noise_reset"], seed=0)
    assert ran[0]["forget_epochs"] == 0 and ran[0]["repair_share"] == 1.0
    assert {p["forget_weighting"] for p in ran} == {"uniform", "rank"}
    assert all(cost("noise_reset", p, work) <= 0.1 for p in ran)
    assert result.params["forget_epochs"] == 2 and result.params["forget_weighting"] == "rank"
    assert result.score == 1.0 and 0.25 <= result.params["repair_share"] <= 0.49


def test_the_search_finds_the_best_method_of_a_known_landscape_within_budget_and_tolerance() -> None:
    """A landscape where neggrad_plus scores best but loses too much accuracy above lr 0.01."""
    seen: list[tuple[str, dict]] = []

    def evaluate(method: str, params: dict) -> TrialScore:
        seen.append((method, params))
        if method == "neggrad_plus":
            drop = 0.05 if params["lr"] > 0.01 else 0.0
            return TrialScore(1.0 + abs(np.log10(params["lr"]) + 2.5), drop)
        return TrialScore(5.0, 0.0)

    settings = AutoParams(trials=40, time_budget_seconds=600)
    reports: list[tuple[int, int]] = []
    result = search(
        evaluate,
        WORK,
        settings,
        methods=["finetune", "neggrad_plus", "ssd"],
        seed=0,
        on_trial=lambda i, n, _r: reports.append((i, n)),
    )
    assert all(cost(m, p, WORK) <= settings.budget + 1e-12 for m, p in seen)
    assert result.chosen_method == "neggrad_plus"
    assert result.params["lr"] <= 0.01 and result.score < 2.0
    assert len(result.trials) == 40 and reports[-1] == (40, 40)
    block = result.to_json()
    assert set(block) == {"chosen_method", "params", "score", "trials"}
    assert block["trials"][0].keys() >= {"method", "params", "score", "accuracy_drop", "feasible", "cost"}


def test_the_time_budget_stops_the_search() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def evaluate(method: str, params: dict) -> TrialScore:
        now[0] += 10.0
        return TrialScore(3.0, 0.0)

    result = search(evaluate, WORK, AutoParams(trials=50, time_budget_seconds=35), seed=1, clock=clock)
    assert 4 <= len([t for t in result.trials if t.score is not None]) <= 5


def test_without_a_feasible_trial_the_least_damaging_one_wins() -> None:
    records = [
        TrialRecord(0, "finetune", {}, 0.1, score=0.5, accuracy_drop=0.2),
        TrialRecord(1, "ssd", {}, 0.01, score=3.0, accuracy_drop=0.05),
    ]
    assert choose(records).chosen_method == "ssd"
    with pytest.raises(RuntimeError):
        choose([TrialRecord(0, "finetune", {}, 2.0)])
    assert INFEASIBLE > 50  # the sampler ranks any feasible trial above every infeasible one


def test_every_searched_method_and_range_is_valid_for_its_params_model() -> None:
    from ml.methods.params import method_spec

    for method, knobs in SPACE.items():
        spec = method_spec(method)
        for end in (0, -1):
            values = {
                name: k.choices[end] if k.choices else (int if k.integer else float)((k.low, k.high)[end])
                for name, k in knobs.items()
            }
            spec.params.model_validate(values)
        for name, knob in knobs.items():
            for value in knob.choices:
                spec.params.model_validate({name: value})
    for method in FIRST:
        assert method in SPACE
        defaults_trial(method)  # raises when a default lies outside its knob


def test_the_defaults_of_first_methods_are_the_first_trial_and_the_wider_knobs_are_searched() -> None:
    """A landscape where noise_reset is best at batch 64 and noise 0.35: the search starts from the
    defaults (batch 32, noise 0.2), then finds the batch and scale it was not given."""

    def evaluate(method: str, params: dict) -> TrialScore:
        if method != "noise_reset":
            return TrialScore(5.0, 0.0)
        off = abs(params["noise_scale"] - 0.35) * 10 + (0.0 if params["batch_size"] == 64 else 1.0)
        return TrialScore(1.0 + off, 0.0)

    result = search(evaluate, WORK, AutoParams(trials=30), methods=["finetune", "noise_reset"], seed=0)
    first = result.trials[0]
    assert first.method == "noise_reset"
    assert first.params["noise_scale"] == 0.2 and first.params["batch_size"] == 32
    assert first.params["fraction"] == 1.0 and first.params["mode"] == "noise"
    assert first.score == pytest.approx(3.5)  # 0.15 off in scale, batch 32
    assert {t.params["batch_size"] for t in result.trials if t.method == "noise_reset"} == {32, 64}
    assert result.chosen_method == "noise_reset"
    assert result.params["batch_size"] == 64 and result.score < 1.5
    # Without noise_reset in the search nothing is queued: the first trial is the sampler's.
    other = search(evaluate, WORK, AutoParams(trials=3), methods=["finetune"], seed=0)
    assert [t.method for t in other.trials] == ["finetune"] * 3


def test_methods_that_cannot_fit_the_budget_are_never_proposed() -> None:
    seen: list[str] = []

    def evaluate(method: str, params: dict) -> TrialScore:
        seen.append(method)
        return TrialScore(1.0, 0.0)

    tight = Workload(n_retain=1400, n_forget=30, recipe=Recipe(epochs=2))  # 0.1 of it is a fifth of an epoch
    result = search(evaluate, tight, AutoParams(trials=6), seed=3)
    # Neither finetune nor a reset with its least repair (one epoch) fits; a reset without repair is no choice.
    assert seen and set(seen) <= {"gradient_ascent", "ssd", "bad_teacher"}
    assert all(t.cost <= 0.1 for t in result.trials)
    assert all(t.score is not None for t in result.trials)

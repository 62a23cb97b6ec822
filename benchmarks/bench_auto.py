"""How close each method gets to retraining, as an excess over finetune, at several forget-set sizes; auto included.

One original model trains on the (optionally subsetted) training split. Per forget fraction a forget set is
drawn with --seed (never a seed the search uses: auto tunes on proxies drawn from the training set with its
own seed), N reference models retrain without it (seeds 0..N-1), and every method runs N times on the
original (seeds 10000+i), `retrain` and `finetune` included, since

    excess = (eps(method) - eps(retrain)) / (eps(finetune) - eps(retrain))

is 0 for a method as close to the references as retraining and 1 for one as far as plain fine-tuning.
Each line gives it with the study's epsilon-hat (infinite or censored at small N) and with the smooth
epsilon-hat (finite at any N), the test accuracy against the original's, and the budget (sample-passes over
a retrain's). `excess_interval` is its 95% interval over the draw of models (ml.metrics.resolution.
bootstrap_excess: references and runs resampled, the method, retrain and finetune scored against the same
references in each replicate); `excess_unresolved` counts the replicates where finetune was not above
retrain (or was censored), which open the interval's ends. With several --seed values (12,13,14) each
forget set is measured in turn and, per fraction, a line per method (`"pooled": true`, `"seeds"`) pools them:
its distance above retrain summed over the forget sets, over finetune's summed the same way, per replicate
for the interval: a small forget set's interval is wide, and several together narrow it. `auto` runs the
service's search (ml/methods/auto.py) on its proxies, then its winner N times.
Method params: each one's defaults, or --params '{"gradient_ascent": {"epochs": 5}}' for a variant; a method
may be listed as name@label to run a variant beside the default (params keyed by name@label). A line's
`params` are the overrides it was given; `params_used`, every param the method ran with, defaults included.

The N references train in packs of --pack (ml.ensemble.train_packed), each initialised and seeded as it would
be alone, and so do the N runs of every method that packs (ml.methods.packed.PACKED, run_packed with the run
seeds above): the same models as one by one, up to float rounding. Other methods run one by one. Each line
gives the method's wall time for its N runs (`wall_seconds`; `seconds` is that per model) and the references'
(`reference_seconds`); scoring (logits, accuracies) is not timed. With --cache DIR, groups trained before
for the same setup are read back (`"cached": true`, with the wall time they took then). `by_difficulty` says
where a group still differs from the references: the forget samples in five groups, hardest first by the
references' mean hinge, each with both groups' mean statistic and the gap in the references' std
(ml/metrics/difficulty.py).

--original-without-forget is the control for what no unlearning method can remove: per fraction the
original trains (same seed, same recipe) on the retain set only, so it never saw the forget set, and the
methods run on it. Their excess then measures how far a group of models that all descend from one model
sits from independently retrained ones when there is nothing to forget: that model's own draw, which every
method's runs share and the references do not. Lines carry `"original": "without_forget"`.

--originals draws that out of the comparison: run i of every method starts from its own original, trained on
the whole training set with seed --original-seed + i (all N trained as one pack), so the unlearned side
varies by original as the references vary by seed, and what is left to tell them apart is what the forget
set left in the models (the per-example attacks of Hayes et al. 2024 draw their unlearned models this way).
It costs N originals besides the N references. Lines carry `"originals": N`. With --auto the search runs
once, on the first of them (seed --original-seed), and its winner runs from each: the service searches per
model, and N searches are out of reach here; the search line says which original it searched on, and its
`trial_log` each trial's method, params, cost, score on the proxies and test accuracy drop.

    python benchmarks/bench_auto.py --fractions 0.005,0.02,0.1 --n-models 6 \\
        --methods retrain,finetune,gradient_ascent,neggrad_plus,salun,ssd
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from mlbench import (
    packed_references,
    prepare_process,
    retrain_reference,
    sync,
    train_original,
    train_originals,
)
from pydantic import ValidationError

from ml.data import ArrayDataset, load_dataset
from ml.data.forget import random_forget_ids
from ml.ensemble import CPU_PACK_SIZE
from ml.logits import accuracy, logits
from ml.methods import UnlearnData, cost, run_method
from ml.methods.auto import SPACE, ProxyTarget, draw_proxies, proxy_evaluator, search
from ml.methods.cost import Workload
from ml.methods.packed import PACKED, run_packed
from ml.methods.params import AutoParams, method_spec
from ml.metrics.difficulty import by_difficulty
from ml.metrics.epsilon import DEFAULT_DELTA, epsilon_hat, hinge_statistic
from ml.metrics.resolution import epsilon_hat_smooth, excess_gaps, excess_interval, shared_replicates
from ml.models import build_model
from ml.specs import ArchSpec, Recipe, recipe_fields
from ml.trainer import resolve_device

METHOD_SEED = 10_000
ORIGINAL_SEED = 20_000
PROXY_SEED = 30_000
"""Auto's proxies draw with this seed, apart from every --seed a forget set is drawn with."""


def subset(dataset: ArrayDataset, n_train: int, n_test: int, seed: int) -> ArrayDataset:
    """Seeded random rows of each split (0 = all)."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)

    def rows(n: int, size: int) -> np.ndarray:
        return np.sort(rng.choice(n, size, replace=False)) if 0 < size < n else np.arange(n)

    tr, te = rows(dataset.n_train, n_train), rows(dataset.n_test, n_test)
    return replace(
        dataset,
        train_x=dataset.train_x[tr],
        train_y=dataset.train_y[tr],
        test_x=dataset.test_x[te],
        test_y=dataset.test_y[te],
    )


def references(
    data: UnlearnData, n: int, pack: int, device: torch.device
) -> tuple[list[torch.nn.Module], float]:
    """n models retrained without the forget set (seeds 0..n-1), in packs of `pack` (1: one by one), each
    initialised and seeded as it would be alone (mlbench); and the seconds their training took."""
    models: list[torch.nn.Module] = []
    seconds = 0.0
    for first in range(0, n, pack):
        seeds = list(range(first, min(n, first + pack)))
        if pack == 1:
            model, took = retrain_reference(data, seeds[0], device)
            models.append(model)
            seconds += took
        else:
            block, per_model = packed_references(data, seeds, device)
            models.extend(block)
            seconds += per_model * len(seeds)
    return models, seconds


def method_runs(
    method: str,
    params: dict[str, Any],
    original: torch.nn.Module | list[torch.nn.Module],
    data: UnlearnData,
    n: int,
    pack: int,
    device: torch.device,
) -> tuple[list[torch.nn.Module], float, bool]:
    """n runs of `method` on the original (seeds METHOD_SEED + i; run i on original[i] when given one per
    run): packed (run_packed, packs of `pack`) when the method packs and pack > 1, else one by one; the
    models, the wall seconds and whether they packed."""
    seeds = [METHOD_SEED + i for i in range(n)]
    starts = original if isinstance(original, list) else [original] * n
    packed = pack > 1 and method in PACKED
    sync(device)
    start = time.perf_counter()
    if packed:
        models = run_packed(method, starts, data, params, seeds=seeds, device=device, pack_size=pack)
    else:
        models = [
            run_method(method, model, data, params, seed=seed, device=device)
            for model, seed in zip(starts, seeds, strict=True)
        ]
    sync(device)
    return models, time.perf_counter() - start, packed


def search_key(settings: AutoParams) -> dict[str, Any]:
    """What a stored auto search is keyed by besides the forget set: its settings and the space it searched."""
    return {
        "method": "auto_search",
        "settings": settings.model_dump(mode="json"),
        "space": {m: {k: asdict(knob) for k, knob in knobs.items()} for m, knobs in SPACE.items()},
    }


class Cache:
    """--cache DIR: groups already trained for the same setup are read back instead of trained again.

    A group (the references, or one method's N runs with its params) is stored as its forget-set logits,
    test accuracies and wall seconds, keyed by everything that makes it: the data set and its subset, the
    recipe, the architecture, the forget set's draw and fraction, N, the method and its params with their
    defaults filled in (so a changed default is trained anew); the original model is stored as its weights,
    and the auto search's choice as JSON, keyed by its settings and the space it searched (so a widened
    space searches anew). Without a directory nothing is stored.
    """

    def __init__(self, folder: str | None, setup: dict[str, Any]) -> None:
        self.folder, self.setup = folder, setup
        if folder:
            os.makedirs(folder, exist_ok=True)

    def path(self, suffix: str, **key: Any) -> str | None:
        if not self.folder:
            return None
        text = json.dumps({**self.setup, **key}, sort_keys=True)
        return os.path.join(self.folder, hashlib.sha256(text.encode()).hexdigest()[:24] + suffix)

    def group(
        self, make: Callable[[], tuple[list[np.ndarray], list[float], float, bool]], **key: Any
    ) -> tuple[list[np.ndarray], list[float], float, bool, bool]:
        """(forget logits, test accuracies, wall seconds, packed, cached) of a group, made by `make` unless
        stored."""
        path = self.path(".npz", **key)
        if path and os.path.exists(path):
            with np.load(path) as f:
                return (
                    list(f["logits"]),
                    [float(t) for t in f["tests"]],
                    float(f["seconds"]),
                    bool(f["packed"]),
                    True,
                )
        outs, tests, seconds, packed = make()
        if path:
            np.savez(path, logits=np.stack(outs), tests=np.asarray(tests), seconds=seconds, packed=packed)
        return outs, tests, seconds, packed, False

    def record(self, make: Callable[[], dict[str, Any]], **key: Any) -> tuple[dict[str, Any], bool]:
        """A JSON record (the auto search's choice), made by `make` unless stored; and whether it was."""
        path = self.path(".json", **key)
        if path and os.path.exists(path):
            with open(path) as f:
                return json.load(f), True
        record = make()
        if path:
            with open(path, "w") as f:
                json.dump(record, f)
        return record, False

    def original(
        self, make: Callable[[], torch.nn.Module], template: torch.nn.Module, trained_with: int, **key: Any
    ) -> torch.nn.Module:
        path = self.path(".pt", original=trained_with, **key)
        if path and os.path.exists(path):
            template.load_state_dict(torch.load(path, weights_only=True))
            return template
        model = make()
        if path:
            torch.save(model.state_dict(), path)
        return model

    def originals(
        self, make: Callable[[], list[torch.nn.Module]], build: Callable[[], torch.nn.Module], **key: Any
    ) -> list[torch.nn.Module]:
        path = self.path(".pt", **key)
        if path and os.path.exists(path):
            models = []
            for state in torch.load(path, weights_only=True):
                model = build()
                model.load_state_dict(state)
                models.append(model)
            return models
        models = make()
        if path:
            torch.save([m.state_dict() for m in models], path)
        return models


DIFFICULTY_BINS = 5
"""by_difficulty's groups: fifths of the forget set (fewer when it holds fewer samples)."""


def number(value: float) -> float | str | None:
    """JSON-safe: infinities as "inf" / "-inf", NaN as null."""
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def excess(eps: float, retrain: float, finetune: float) -> float | str | None:
    if not all(math.isfinite(v) for v in (retrain, finetune)) or finetune == retrain:
        return None
    return number((eps - retrain) / (finetune - retrain))


def pooled_line(
    dataset: str,
    fraction: float,
    seeds: list[int],
    label: str,
    parts: list[tuple[float, float, np.ndarray, np.ndarray, dict[str, Any]]],
    control: dict[str, Any],
) -> dict[str, Any]:
    """A method's excess over several forget sets: its distances above retrain summed over theirs for finetune,
    per replicate for the interval; test drop and budget averaged over the forget sets."""
    gap = sum(p[0] for p in parts)
    scale = sum(p[1] for p in parts)
    spread = excess_interval(sum(p[2] for p in parts), sum(p[3] for p in parts))
    point = gap / scale if 0 < scale < math.inf and not math.isnan(gap) else math.nan
    return {
        "dataset": dataset,
        "fraction": fraction,
        "seeds": seeds,
        "pooled": True,
        **control,
        "method": label,
        "excess": number(point),
        "excess_interval": [number(spread.low), number(spread.high)],
        "excess_unresolved": spread.n_unresolved,
        "excess_replicates": spread.n_boot,
        "test_drop": float(np.mean([p[4]["test_drop"] for p in parts])),
        "budget": float(np.mean([p[4]["budget"] for p in parts])),
    }


def seed_list(text: str) -> list[int]:
    """--seed: one forget-set seed or several, comma-separated, each once."""
    seeds = [int(x) for x in text.split(",")]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"a seed is repeated in {text}")
    return seeds


def json_object(text: str) -> dict[str, Any]:
    """--recipe: a JSON object."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{text} is not a JSON object")
    return value


BENCH = "auto"


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed, under this benchmark's name (the originals' lines carry it too)."""
    print(json.dumps({"bench": BENCH, **record}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--train-size", type=int, default=0)
    parser.add_argument("--test-size", type=int, default=0)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument(
        "--recipe",
        type=json_object,
        default={},
        help="JSON: fields of the data set's recipe to replace, as a training request's recipe does (an augment "
        'replaces the whole augment), e.g. \'{"batch_size": 32, "augment": {"crop_padding": 0}}\'',
    )
    parser.add_argument(
        "--epochs", type=int, default=0, help="the recipe's epochs (0: the data set's default)"
    )
    parser.add_argument("--fractions", default="0.02")
    parser.add_argument("--n-models", type=int, default=6)
    parser.add_argument("--methods", default="retrain,finetune")
    parser.add_argument("--params", default="{}", help="JSON: method (or method@label) -> params")
    parser.add_argument("--auto", action="store_true", help="add the auto search's winner")
    parser.add_argument("--auto-params", default="{}", help="JSON AutoParams for the search")
    parser.add_argument(
        "--seed",
        type=seed_list,
        default="1",
        help="the forget sets' draw; several (12,13) measure each and add a line per method pooling them",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--pack",
        type=int,
        default=CPU_PACK_SIZE,
        help="references and packed methods train this many at a time (1: one by one)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--cache",
        default=None,
        help="folder: reuse the original and groups trained before with the same setup",
    )
    parser.add_argument(
        "--original-seed",
        type=int,
        default=ORIGINAL_SEED,
        help="the original's training seed: another draw of the model every method starts from",
    )
    parser.add_argument(
        "--originals",
        action="store_true",
        help="each of a method's N runs starts from its own original (seeds --original-seed + i), not all from one",
    )
    parser.add_argument(
        "--original-without-forget",
        action="store_true",
        help="control: per fraction the original trains on the retain set only (never sees the forget set)",
    )
    args = parser.parse_args()
    seeds: list[int] = args.seed
    try:
        recipe = Recipe.model_validate(recipe_fields(args.dataset, args.recipe))
    except ValidationError as error:
        parser.error(f"argument --recipe: {error}")
    process = prepare_process(args.threads)  # as a worker's pool process is set up
    device = resolve_device(args.device)
    started = time.perf_counter()
    dataset = load_dataset(args.dataset, args.root)
    if args.train_size or args.test_size:
        dataset = subset(dataset, args.train_size, args.test_size, 0)
    if args.epochs:
        recipe = recipe.cut_to(args.epochs)
    arch = ArchSpec(width=args.width)
    names = [n for n in args.methods.split(",") if n]
    for needed in ("retrain", "finetune"):
        if needed not in names:
            names.insert(0, needed)
    overrides: dict[str, dict[str, Any]] = json.loads(args.params)
    auto_settings = AutoParams.model_validate(json.loads(args.auto_params))
    emit(
        {
            "dataset": args.dataset,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "arch": arch.model_dump(),
            "recipe": recipe.model_dump(),
            "n_models": args.n_models,
            "methods": names,
            "params": overrides,
            "auto": auto_settings.model_dump() if args.auto else None,
            "seed": seeds[0] if len(seeds) == 1 else seeds,
            **process,
            "pack": args.pack,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    )
    whole = UnlearnData(dataset, np.zeros(0, np.int64), recipe=recipe, arch=arch)
    cache = Cache(
        args.cache,
        {
            "dataset": args.dataset,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "sizes": [args.train_size, args.test_size],
            "arch": arch.model_dump(),
            "recipe": recipe.model_dump(),
        },
    )

    def fresh() -> torch.nn.Module:
        return build_model(arch, dataset.num_classes, dataset.in_channels).to(device)

    original_seeds = [args.original_seed + i for i in range(args.n_models)]
    original: torch.nn.Module | list[torch.nn.Module] = (
        cache.originals(
            lambda: train_originals(whole, original_seeds, device, bench=BENCH),
            fresh,
            originals=original_seeds,
        )
        if args.originals
        else cache.original(
            lambda: train_original(whole, args.original_seed, device, bench=BENCH),
            fresh(),
            args.original_seed,
        )
    )
    for fraction in (float(f) for f in args.fractions.split(",")):
        pooled: dict[str, list[Any]] = {}
        for seed in seeds:
            forget = random_forget_ids(dataset.n_train, fraction=fraction, seed=seed)
            data = UnlearnData(dataset, forget, recipe=recipe, arch=arch)
            labels = dataset.train_y[forget]
            group = {"fraction": fraction, "seed": seed, "n_models": args.n_models}
            # The control's original depends on the forget set: every group but the references and retrain
            # (which never read the original's weights) is keyed by it, and by the original's seed.
            control: dict[str, Any] = {"original": "without_forget"} if args.original_without_forget else {}
            if args.original_seed != ORIGINAL_SEED:
                control["original_seed"] = args.original_seed
            if args.originals:
                control["originals"] = args.n_models
            if args.original_without_forget and args.originals:
                original = cache.originals(
                    lambda: train_originals(data, original_seeds, device, bench=BENCH, retain_only=True),  # noqa: B023
                    fresh,
                    originals=original_seeds,
                    fraction=fraction,
                    seed=seed,
                )
            elif args.original_without_forget:
                original = cache.original(
                    lambda: train_original(data, args.original_seed, device, bench=BENCH, retain_only=True),  # noqa: B023
                    fresh(),
                    args.original_seed,
                    fraction=fraction,
                    seed=seed,
                )
            starts = original if isinstance(original, list) else [original]
            base_test = float(
                np.mean([accuracy(m, dataset, None, split="test", device=device) for m in starts])
            )

            def trained_references() -> tuple[list[np.ndarray], list[float], float, bool]:
                nets, seconds = references(data, args.n_models, args.pack, device)  # noqa: B023 (called at once)
                outs = [logits(net, dataset, forget, device=device) for net in nets]  # noqa: B023
                return (
                    outs,
                    [accuracy(net, dataset, None, split="test", device=device) for net in nets],
                    seconds,
                    True,
                )

            refs, _, ref_seconds, _, _ = cache.group(trained_references, **group, method="references")
            ref_stat = hinge_statistic(np.stack(refs), labels)
            runs: dict[str, tuple[str, dict[str, Any]]] = {}
            for label in names:
                runs[label] = (label.split("@")[0], overrides.get(label, {}))
            if args.auto:

                def searched_choice() -> dict[str, Any]:
                    search_started = time.perf_counter()
                    targets = []
                    for ids in draw_proxies(
                        dataset.train_y,
                        forget,  # noqa: B023 (called at once)
                        whole.retain_ids,
                        auto_settings.proxies,
                        PROXY_SEED,
                    ):
                        proxy = UnlearnData(dataset, ids, recipe=recipe, arch=arch)
                        proxy_refs, _ = references(proxy, auto_settings.n_models, args.pack, device)
                        outs = [logits(net, dataset, ids, device=device) for net in proxy_refs]
                        targets.append(
                            ProxyTarget(proxy, hinge_statistic(np.stack(outs), dataset.train_y[ids]))
                        )
                    searched = original[0] if isinstance(original, list) else original  # noqa: B023
                    evaluate = proxy_evaluator(searched, targets, auto_settings.n_models, device=device)
                    work = Workload(len(data.retain_ids), len(forget), recipe)  # noqa: B023
                    result = search(evaluate, work, auto_settings, seed=0).to_json()
                    return {
                        **{k: v for k, v in result.items() if k != "trials"},
                        "trials": len(result["trials"]),
                        "trial_log": [
                            {
                                k: t[k]
                                for k in ("method", "params", "cost", "score", "accuracy_drop", "feasible")
                            }
                            for t in result["trials"]
                        ],
                        "search_seconds": round(time.perf_counter() - search_started, 1),
                    }

                choice, cached = cache.record(
                    searched_choice,
                    **group,
                    **control,
                    **search_key(auto_settings),
                )
                runs["auto"] = (choice["chosen_method"], choice["params"])
                emit(
                    {
                        "fraction": fraction,
                        "seed": seed,
                        "auto_search": {k: choice[k] for k in ("chosen_method", "params", "score")},
                        "searched_on_seed": args.original_seed,
                        "trials": choice["trials"],
                        "trial_log": choice.get("trial_log"),  # searches stored before it was kept: null
                        "search_seconds": choice["search_seconds"],
                        "cached": cached,
                    }
                )
            lines = {}
            stats = {}
            for label, (method, params) in runs.items():

                def trained(method: str = method, params: dict[str, Any] = params) -> tuple[Any, ...]:
                    nets, seconds, packed = method_runs(
                        method,
                        params,
                        original,  # noqa: B023 (called at once)
                        data,  # noqa: B023 (called at once)
                        args.n_models,
                        args.pack,
                        device,
                    )
                    outs = [logits(net, dataset, forget, device=device) for net in nets]  # noqa: B023
                    tests = [accuracy(net, dataset, None, split="test", device=device) for net in nets]
                    return outs, tests, seconds, packed

                full = (
                    method_spec(method).params.model_validate(params).model_dump(mode="json")
                )  # defaults too
                outs, tests, seconds, packed, cached = cache.group(
                    trained, **group, **({} if method == "retrain" else control), method=method, params=full
                )
                stat = stats[label] = hinge_statistic(np.stack(outs), labels)
                lines[label] = {
                    "method": label,
                    "ran": method,
                    "params": params,
                    "params_used": full,
                    "eps": epsilon_hat(
                        np.stack(refs), np.stack(outs), labels, delta=DEFAULT_DELTA
                    ).epsilon_hat,
                    "smooth": epsilon_hat_smooth(ref_stat, stat),
                    "by_difficulty": [
                        b.to_json()
                        for b in by_difficulty(ref_stat, stat, bins=min(DIFFICULTY_BINS, len(forget)))
                    ],
                    "test_accuracy": float(np.mean(tests)),
                    "test_drop": base_test - float(np.mean(tests)),
                    "test_accuracy_min": float(np.min(tests)),
                    "forget_accuracy": float(np.mean([(o.argmax(1) == labels).mean() for o in outs])),
                    "budget": cost(method, params, data),
                    "seconds": round(seconds / args.n_models, 2),
                    "wall_seconds": round(seconds, 1),
                    "packed": packed,
                    "cached": cached,
                    "reference_seconds": round(ref_seconds, 1),
                }
            r, f = lines["retrain"], lines["finetune"]
            # Each group's replicates once, all against the same resampled references (as excess_replicates).
            reps = dict(
                zip(lines, shared_replicates(ref_stat, [stats[label] for label in lines]), strict=True)
            )
            for label, line in lines.items():
                gap, scale = excess_gaps(reps[label], reps["retrain"], reps["finetune"])
                spread = excess_interval(gap, scale)
                pooled.setdefault(label, []).append(
                    (line["eps"] - r["eps"], f["eps"] - r["eps"], gap, scale, line)
                )
                out = {
                    "dataset": args.dataset,
                    "fraction": fraction,
                    "seed": seed,
                    "n_forget": len(forget),
                    **control,
                    **line,
                    "eps": number(line["eps"]),
                    "smooth": number(line["smooth"]),
                    "excess": excess(line["eps"], r["eps"], f["eps"]),
                    "excess_interval": [number(spread.low), number(spread.high)],
                    "excess_unresolved": spread.n_unresolved,
                    "excess_replicates": spread.n_boot,
                    "excess_smooth": excess(line["smooth"], r["smooth"], f["smooth"]),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
                emit(out)
            print(
                f"fraction {fraction}, seed {seed} done, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if len(seeds) > 1:
            for label, parts in pooled.items():
                emit(pooled_line(args.dataset, fraction, seeds, label, parts, control))
    emit({"done": True, "wall_seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()

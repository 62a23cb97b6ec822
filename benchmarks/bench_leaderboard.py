"""Every unlearning method scored against one reference set, in one table: the study's Table 1, run here.

One original model (ResNet-18, CIFAR form) trains on the whole training split; a seeded random forget set
is drawn; N reference models retrain from scratch on the retain set (seeds 0..N-1) and every method runs N
times on the original model with its default parameters (seeds 10000+i). Per method it prints one JSON
line: epsilon-hat (delta 0.05) with its resolution (epsilon_ceiling, n_at_ceiling, n_infinite, censored),
its bootstrap interval over models (epsilon_hat_ci95_models), the smooth estimate, the per-sample ci95 and
counts, the NeurIPS 2023 score (null below MIN_MODELS),
retain / forget / test accuracy (mean and 95% half-width over seeds), MIA-efficacy (SVC attack, retain vs
test, at most 2000 samples each), the mean KL of the reference group's forget-set predictions to the
method's, the measured wall time per model over a reference model's, and the compute budget
ml.methods.cost assigns (sample-passes over a retrain's).

Seeds go in blocks of --pack (8): the block's reference models train as one pack (ml.ensemble), and so do
the runs of every method the service runs packed (ml.methods.packing; among the study's: retrain, finetune,
and the methods that repair after a reset, whose stages before the retain-set repair run alone); other
methods run one by one. Blocks are
interleaved (references, then every method, for seeds of the block), so a change in machine load touches
every method alike. After each block every group is scored on the models it has ("partial": true until the
last), and each line goes to --out as soon as it is made, so a run cut short keeps its last block's scores;
--stop-after ends a run early on a block boundary. --report FILE [FILE] prints the tables from such files
and, for two runs (two forget-set seeds), how alike their rankings are (Spearman and Kendall, scipy).

    python benchmarks/bench_leaderboard.py --markdown      # digits, N=6
    python benchmarks/bench_leaderboard.py --methods study --n-models 32 --train-size 300 --test-size 200 \
        --seed 0 --out benchmarks/results/leaderboard-digits-seed0.jsonl --markdown    # docs/benchmarks.md
    python benchmarks/bench_leaderboard.py --report benchmarks/results/leaderboard-digits-seed{0,1}.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch
from mlbench import packed_references, retrain_reference, sync, train_original

from ml.data import ArrayDataset, load_dataset
from ml.data.forget import random_forget_ids
from ml.logits import evaluate, logits
from ml.methods import METHOD_SPECS, UnlearnData, cost, run_method
from ml.methods.packed import run_packed
from ml.methods.packing import PACKED_METHODS
from ml.metrics.divergence import mean_kl
from ml.metrics.epsilon import DEFAULT_DELTA, epsilon_hat, hinge_statistic, json_number
from ml.metrics.mia import mia_efficacy
from ml.metrics.neurips import MIN_MODELS, neurips_score
from ml.metrics.resolution import resolution
from ml.specs import ArchSpec, default_recipe
from ml.trainer import resolve_device

METHOD_SEED = 10000
"""Method run i uses seed 10000 + i, as evaluations do, so retrain never reproduces a reference model."""
ORIGINAL_SEED = 20000
"""The original model trains with 20000 + --seed, apart from both the reference and the method seeds."""
MIA_SAMPLES = 2000
"""Retain and test samples the membership attack trains on (each side, at most), as evaluations use."""
ACCURACIES = ("retain_accuracy", "forget_accuracy", "test_accuracy")


def subset(dataset: ArrayDataset, n_train: int, n_test: int, seed: int) -> ArrayDataset:
    """Seeded random rows of each split (0 = all), so large data sets fit a CPU's time."""
    rng = np.random.default_rng(seed)

    def rows(n: int, size: int) -> np.ndarray:
        return np.sort(rng.choice(n, size, replace=False)) if 0 < size < n else np.arange(n)

    tr, te = rows(dataset.n_train, n_train), rows(dataset.n_test, n_test)
    groups = None if dataset.train_groups is None else dataset.train_groups[tr]
    return replace(
        dataset,
        train_x=dataset.train_x[tr],
        train_y=dataset.train_y[tr],
        test_x=dataset.test_x[te],
        test_y=dataset.test_y[te],
        train_groups=groups,
    )


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, 95% half-width (1.96 std / sqrt(n)) and count, as evaluations report them."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(arr.mean()),
        "ci95": float(1.96 * arr.std() / math.sqrt(arr.size)),
        "n": int(arr.size),
    }


class Group:
    """One group of models (the references, or one method's runs): what each model gave on the shared sets."""

    def __init__(self) -> None:
        self.forget_logits: list[np.ndarray] = []
        self.metrics: dict[str, list[float]] = {k: [] for k in (*ACCURACIES, "mia_efficacy", "seconds")}

    def add(self, model: torch.nn.Module, seconds: float, data: UnlearnData, probe: Probe) -> None:
        """Score a trained model: accuracies, forget-set logits and MIA-efficacy (none of it timed)."""
        forget = logits(model, data.dataset, data.forget_ids, device=probe.device)
        self.forget_logits.append(forget)
        for key, value in evaluate(model, data, device=probe.device).items():
            if key in self.metrics:
                self.metrics[key].append(float(value))
        self.metrics["mia_efficacy"].append(probe.mia(model, forget))
        self.metrics["seconds"].append(seconds)

    def stacked(self) -> np.ndarray:
        return np.stack(self.forget_logits)


class Probe:
    """The fixed retain and test samples the membership attack learns from, drawn once for every model."""

    def __init__(self, data: UnlearnData, device: torch.device) -> None:
        rng = np.random.default_rng(0)
        self.data, self.device = data, device
        self.retain = np.sort(rng.permutation(data.retain_ids)[:MIA_SAMPLES])
        self.test = np.sort(rng.permutation(data.dataset.n_test)[:MIA_SAMPLES])

    def mia(self, model: torch.nn.Module, forget_logits: np.ndarray) -> float:
        """Share of forget samples the SVC attack (retain = member, test = non-member) calls non-members."""
        ds = self.data.dataset
        return mia_efficacy(
            logits(model, ds, self.retain, device=self.device),
            ds.train_y[self.retain],
            logits(model, ds, self.test, split="test", device=self.device),
            ds.test_y[self.test],
            forget_logits,
            ds.train_y[self.data.forget_ids],
        )


def _packed_run(
    name: str, original: torch.nn.Module, data: UnlearnData, seeds: list[int], device: torch.device
) -> list[torch.nn.Module]:
    """ml.methods' `name` at its defaults for run seeds `seeds`, as one pack (ml.methods.packed.run_packed)."""
    return run_packed(name, original, data, None, seeds=seeds, device=device, pack_size=len(seeds))


PACKED: dict[str, Callable[..., list[torch.nn.Module]]] = {
    name: partial(_packed_run, name) for name in sorted(PACKED_METHODS) if name in METHOD_SPECS
}
"""Methods that run packed in the service too (ml.methods.packing): with --pack above 1 their runs train K at a
time, each from the weights and with the seeds run_method would give it (for repairing methods, the stages
before the retain-set repair run alone and the repairs together); every other method runs one by one."""

STUDY_METHODS = (
    "none",
    "finetune",
    "retrain",
    "poison",
    "poison_full",
    "hybrid",
    "prune",
    "prune_last_layer",
    "prune_complex",
    "activation_reset",
)
"""The study's approaches (its Table 1, with `none` for the untouched model) and retrain: --methods study."""


def summarise(name: str, refs: Group, group: Group, data: UnlearnData, ref_seconds: float) -> dict[str, Any]:
    """One method's leaderboard line from its group and the reference group."""
    labels = data.dataset.train_y[data.forget_ids]
    ref_out, unl_out = refs.stacked(), group.stacked()
    eps = epsilon_hat(ref_out, unl_out, labels, delta=DEFAULT_DELTA)
    n = min(len(refs.forget_logits), len(group.forget_logits))
    neurips = (
        neurips_score(
            ref_out,
            unl_out,
            labels,
            reference_retain_accuracy=refs.metrics["retain_accuracy"],
            reference_test_accuracy=refs.metrics["test_accuracy"],
            unlearned_retain_accuracy=group.metrics["retain_accuracy"],
            unlearned_test_accuracy=group.metrics["test_accuracy"],
        ).to_json()
        if n >= MIN_MODELS
        else None
    )
    seconds = spread(group.metrics["seconds"])
    res = resolution(eps, hinge_statistic(ref_out, labels), hinge_statistic(unl_out, labels))
    return {
        "method": name,
        **eps.to_json(),
        **res.to_json(),
        "delta": DEFAULT_DELTA,
        "neurips": neurips,
        **{k: spread(group.metrics[k]) for k in (*ACCURACIES, "mia_efficacy")},
        "kl_to_reference": mean_kl(ref_out, unl_out),
        "seconds": seconds,
        "time_vs_retrain": seconds["mean"] / ref_seconds,
        "budget_vs_retrain": cost(name, {}, data),
    }


def scores(
    refs: Group, groups: dict[str, Group], data: UnlearnData, *, partial: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The reference group's line and every method's, from the models trained so far; `partial` marks the
    lines written before the last seed, so a reader takes each method's last line."""
    ref_seconds = spread(refs.metrics["seconds"])
    reference = {
        "reference": True,
        "n_models": len(refs.forget_logits),
        "partial": partial,
        **{k: spread(refs.metrics[k]) for k in (*ACCURACIES, "mia_efficacy")},
        "seconds": ref_seconds,
    }
    lines = [
        {**summarise(name, refs, group, data, ref_seconds["mean"]), "partial": partial}
        for name, group in groups.items()
    ]
    return reference, lines


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def _pm(s: dict[str, Any], digits: int = 3) -> str:
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"


def _order(line: dict[str, Any]) -> tuple[int, float, str]:
    """Finite epsilon-hats first, ascending, then infinite ones, then undefined ones (NaN is null in JSON)."""
    e = line["epsilon_hat"]
    if e is None:
        return 2, 0.0, line["method"]
    if e == "inf":
        return 1, 0.0, line["method"]
    return 0, float(e), line["method"]


def markdown(lines: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    """The leaderboard as a Markdown table sorted by epsilon-hat, with the reference group's own row last.

    Every epsilon-hat shows its bootstrap interval over models and its ceiling; a censored one is marked,
    since the true value may lie anywhere above it.
    """
    head = (
        "| method | epsilon-hat [95% over models] | ceiling | at ceiling / inf | smooth | NeurIPS | retain"
        " | forget | test | MIA | KL | time/retrain | budget/retrain |"
    )
    rows = [head, "|" + " --- |" * 13]
    for line in sorted(lines, key=_order):
        low, high = (_num(v) for v in line["epsilon_hat_ci95_models"])
        eps = _num(line["epsilon_hat"]) + (" (censored)" if line["censored"] else "")
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{line['method']}`",
                    f"{eps} [{low}, {high}]",
                    _num(line["epsilon_ceiling"]),
                    f"{line['n_at_ceiling']} / {line['n_infinite']} of {line['n_samples']}",
                    _num(line["epsilon_hat_smooth"]),
                    _num(None if line["neurips"] is None else line["neurips"]["score"]),
                    *(_pm(line[k]) for k in ACCURACIES),
                    _num(line["mia_efficacy"]["mean"]),
                    _num(line["kl_to_reference"]),
                    _num(line["time_vs_retrain"]),
                    _num(line["budget_vs_retrain"]),
                ]
            )
            + " |"
        )
    rows.append(
        "| *reference (retrained)* | – | – | – | – | – | "
        + " | ".join(_pm(reference[k]) for k in ACCURACIES)
        + f" | {_num(reference['mia_efficacy']['mean'])} | – | 1.000 | 1.000 |"
    )
    return "\n".join(rows)


def _value(v: Any) -> float:
    """A JSON figure as a float: "inf" is infinity, null (NaN) is NaN."""
    return math.nan if v is None else float(v)


def read_results(
    path: str, models: int | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A --out file's setup line, last reference line and every method's last line (the most models); with
    `models`, the lines scored on at most that many models per group (to compare runs at equal sizes)."""
    setup: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    last: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as f:
        for text in f:
            record = json.loads(text)
            size = record.get("n_models", record.get("n_reference"))
            if models is not None and size is not None and "bench" not in record and size > models:
                continue
            if record.get("bench") == "leaderboard":
                setup = record
            elif record.get("reference"):
                reference = record
            elif "method" in record:
                last[record["method"]] = record
    if not last:
        raise ValueError(f"{path} holds no scored method yet")
    return setup, reference, list(last.values())


def stability(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """How alike two leaderboards rank their common methods: Spearman's rho and Kendall's tau-b (scipy; both
    count ties, which censored and infinite figures make common), for epsilon-hat and its smooth companion.

    Infinite figures rank last, tied; a method whose figure is undefined (NaN) in either run is left out of
    that figure's correlation.
    """
    from scipy.stats import kendalltau, spearmanr

    by_a, by_b = {r["method"]: r for r in a}, {r["method"]: r for r in b}
    common = [m for m in by_a if m in by_b]
    out: dict[str, Any] = {"methods": common}
    for key in ("epsilon_hat", "epsilon_hat_smooth"):
        pairs = [(m, _value(by_a[m][key]), _value(by_b[m][key])) for m in common]
        pairs = [p for p in pairs if not (math.isnan(p[1]) or math.isnan(p[2]))]
        x = [min(p[1], 1e300) for p in pairs]  # infinities tie at the bottom, which ranking keeps
        y = [min(p[2], 1e300) for p in pairs]
        rho, rho_p = spearmanr(x, y)
        tau, tau_p = kendalltau(x, y)
        out[key] = {
            "n_methods": len(pairs),
            "spearman": json_number(float(rho)),
            "spearman_p": json_number(float(rho_p)),
            "kendall_tau_b": json_number(float(tau)),
            "kendall_p": json_number(float(tau_p)),
        }
    return out


def report(paths: list[str], models: int | None = None) -> None:
    """Tables from --out files (each method's last line, or its last on at most `models` models per group),
    and with two files, their ranking's stability."""
    runs = [read_results(p, models) for p in paths]
    for path, (setup, reference, lines) in zip(paths, runs, strict=True):
        n = lines[0]["n_reference"]
        print(f"{path}: {setup.get('dataset')}, seed {setup.get('seed')}, {n} models per group\n")
        print(markdown(lines, reference))
        print()
    if len(runs) == 2:
        print(
            json.dumps(
                {"bench": "leaderboard_stability", "files": paths, **stability(runs[0][2], runs[1][2])}
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=None, help="data set folder, for data sets that need one")
    parser.add_argument("--n-models", type=int, default=6, help="reference models, and runs per method")
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 width (64 = standard)")
    parser.add_argument(
        "--epochs", type=int, default=8, help="the recipe's epochs (0: the data set's default recipe as is)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="the recipe's batch size (0: the data set's default)"
    )
    parser.add_argument("--forget-fraction", type=float, default=0.1)
    parser.add_argument(
        "--methods",
        default=",".join(METHOD_SPECS),
        help="comma-separated names, or `study`: the study's approaches and retrain",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="the forget set's draw and the original model's")
    parser.add_argument("--train-size", type=int, default=0, help="seeded random training rows (0 = all)")
    parser.add_argument("--test-size", type=int, default=0, help="seeded random test rows (0 = all)")
    parser.add_argument(
        "--pack",
        type=int,
        default=8,
        help="references and packed methods train this many at a time (1: one by one)",
    )
    parser.add_argument(
        "--summary-every", type=int, default=8, help="with --pack 1: score every group after this many seeds"
    )
    parser.add_argument(
        "--stop-after",
        type=float,
        default=0,
        help="seconds: start no new block of seeds after this; the groups are scored on what they have",
    )
    parser.add_argument("--out", default=None, help="also write every JSON line to this file as it is made")
    parser.add_argument("--markdown", action="store_true", help="end with a Markdown table")
    parser.add_argument(
        "--report",
        nargs="+",
        metavar="FILE",
        help="train nothing: tables from --out files, and with two, how stable their ranking is",
    )
    parser.add_argument(
        "--report-models",
        type=int,
        default=None,
        help="with --report: the lines scored on at most this many models per group (runs cut short)",
    )
    args = parser.parse_args()
    if args.report:
        if len(args.report) > 2:
            parser.error("--report takes one or two files")
        report(args.report, args.report_models)
        return
    names = list(STUDY_METHODS) if args.methods == "study" else [n for n in args.methods.split(",") if n]
    unknown = sorted(set(names) - set(METHOD_SPECS))
    if unknown:
        parser.error(f"unknown methods {unknown}; valid: {', '.join(METHOD_SPECS)}")
    if args.n_models < 2:
        parser.error("--n-models must be at least 2: epsilon-hat fits a Gaussian to each group")
    if args.pack < 1 or args.summary_every < 1:
        parser.error("--pack and --summary-every must be at least 1")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.root)
    if args.train_size or args.test_size:
        dataset = subset(dataset, args.train_size, args.test_size, args.seed)
    recipe = default_recipe(args.dataset)
    if args.epochs:
        recipe = recipe.cut_to(args.epochs)
    if args.batch_size:  # a small subset needs small batches to take enough steps to learn
        recipe = recipe.model_copy(update={"batch_size": args.batch_size})
    arch = ArchSpec(width=args.width)
    forget = random_forget_ids(dataset.n_train, fraction=args.forget_fraction, seed=args.seed)
    data = UnlearnData(dataset, forget, recipe=recipe, arch=arch)
    out_file = None
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        out_file = open(args.out, "w", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def emit(record: dict[str, Any]) -> None:
        """One JSON line to stdout and, flushed at once, to --out: a run cut short keeps what it had."""
        text = json.dumps(record)
        print(text, flush=True)
        if out_file is not None:
            out_file.write(text + "\n")
            out_file.flush()

    emit(
        {
            "bench": "leaderboard",
            "dataset": args.dataset,
            "n_train": dataset.n_train,
            "n_test": dataset.n_test,
            "forget": len(forget),
            "retain": len(data.retain_ids),
            "arch": arch.model_dump(),
            "recipe": recipe.model_dump(),
            "n_models": args.n_models,
            "methods": names,
            "params": "each method's defaults",
            "threads": torch.get_num_threads(),
            "device": str(device),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "seed": args.seed,
            "pack": args.pack,
        }
    )

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        original = train_original(data, ORIGINAL_SEED + args.seed, device, bench="leaderboard")
    for text in printed.getvalue().splitlines():
        emit(json.loads(text))

    probe = Probe(data, device)
    refs = Group()
    groups = {name: Group() for name in names}
    block = args.pack if args.pack > 1 else args.summary_every
    for first in range(0, args.n_models, block):
        seeds = list(range(first, min(args.n_models, first + block)))
        if args.pack > 1:
            models, per_model = packed_references(data, seeds, device)
            for model in models:
                refs.add(model, per_model, data, probe)
        else:
            for i in seeds:
                model, seconds = retrain_reference(data, i, device)
                refs.add(model, seconds, data, probe)
        for name in names:
            run_seeds = [METHOD_SEED + i for i in seeds]
            if args.pack > 1 and name in PACKED:
                sync(device)
                start = time.perf_counter()
                outs = PACKED[name](original, data, run_seeds, device)
                sync(device)
                per_model = (time.perf_counter() - start) / len(outs)
                for out in outs:
                    groups[name].add(out, per_model, data, probe)
            else:
                for seed in run_seeds:
                    sync(device)
                    start = time.perf_counter()
                    out = run_method(name, original, data, {}, seed=seed, device=device)
                    sync(device)
                    groups[name].add(out, time.perf_counter() - start, data, probe)
            print(
                f"seeds {seeds[0]}-{seeds[-1]}: {name} done, {time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        done = seeds[-1] + 1
        print(
            f"seed {done}/{args.n_models} done, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        late = args.stop_after and time.perf_counter() - started > args.stop_after and done < args.n_models
        if done >= 2:
            reference, lines = scores(refs, groups, data, partial=done < args.n_models and not late)
            emit(reference)
            for line in lines:
                emit(line)
        if late:
            break
    emit(
        {
            "bench": "leaderboard",
            "done": True,
            "n_models": len(refs.forget_logits),
            "stopped_early": len(refs.forget_logits) < args.n_models,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
    )
    if out_file is not None:
        out_file.close()
    if args.markdown:
        print()
        print(markdown(lines, reference))


if __name__ == "__main__":
    main()

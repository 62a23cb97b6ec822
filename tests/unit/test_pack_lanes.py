"""A pack trained in lanes (sub-packs, one per CPU thread, each in its own thread) is the same pack: each
network trains as it does in one loop; progress, stop and errors are the whole call's, in the caller's thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import replace

import numpy as np
import pytest
import torch

from ml.data import ArrayDataset, load_dataset
from ml.ensemble import fit_packed, pack_lanes
from ml.errors import Cancelled, Diverged
from ml.models import build_model
from ml.packed_net import PackedNet
from ml.specs import ArchSpec, AugmentSpec
from ml.trainer import ProgressEvent

ARCH = ArchSpec(width=4)
SEEDS = [3, 4, 5, 6]


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    full = load_dataset("digits")
    return replace(full, train_x=full.train_x[:300], train_y=full.train_y[:300])


@pytest.fixture
def two_threads() -> Iterator[None]:
    """The process on two torch threads, as a worker on a 2-core machine runs; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def fresh(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH, 10, 1)


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def lane_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pack-lane")]


def test_one_lane_per_cpu_thread_and_never_more_than_networks(two_threads: None) -> None:
    assert [pack_lanes("cpu", k) for k in (1, 2, 8)] == [1, 2, 2]
    torch.set_num_threads(1)
    assert pack_lanes("cpu", 8) == 1


@pytest.mark.parametrize("lanes", [2, 3])
def test_each_network_trains_in_a_lane_as_in_one_pack(
    digits: ArrayDataset, two_threads: None, lanes: int
) -> None:
    """Three steps of four networks (own seeds, own ids, augmentation) in 2 lanes (2 + 2) or 3 (2 + 1 + 1)
    against the same four in one loop: each network within float rounding of itself, not of another seed."""
    ids = [np.arange(0, 150), np.arange(150, 300), np.arange(0, 300, 2), np.arange(1, 300, 2)]
    kwargs = dict(
        epochs=1, lr=0.05, batch_size=50, augment=AugmentSpec(crop_padding=2, flip=True), schedule="cosine"
    )
    one = [fresh(s) for s in SEEDS]
    fit_packed(one, digits, ids, seeds=SEEDS, lanes=1, **kwargs)  # type: ignore[arg-type]
    laned = [fresh(s) for s in SEEDS]
    stats = fit_packed(laned, digits, ids, seeds=SEEDS, lanes=lanes, **kwargs)  # type: ignore[arg-type]
    assert [s.steps for s in stats] == [3] * 4 and [s.samples for s in stats] == [150] * 4
    assert len({s.seconds for s in stats}) == 1  # the call's wall time, shared
    for a, b in zip(one, laned, strict=True):
        # A sub-pack's grouped convolutions, on one thread, round differently from the whole pack's on two:
        # 2.4e-7 apart after three steps here, while another seed's network is 2.4 away.
        assert max_diff(a, b) < 1e-5
    assert max_diff(laned[0], laned[1]) > 5e-2
    assert torch.get_num_threads() == 2  # the caller's thread count, back after the lanes ran on one each
    assert lane_threads() == []


def test_lanes_report_progress_and_take_stops_in_the_callers_thread(
    digits: ArrayDataset, two_threads: None
) -> None:
    caller = threading.get_ident()
    events: list[ProgressEvent] = []
    progress_threads, stop_threads = set(), set()

    def progress(event: ProgressEvent) -> None:
        progress_threads.add(threading.get_ident())
        events.append(event)

    def should_stop() -> bool:
        stop_threads.add(threading.get_ident())
        return False

    stats = fit_packed(
        [fresh(s) for s in SEEDS],
        digits,
        [None] * 4,
        seeds=SEEDS,
        epochs=2,
        lr=0.05,
        batch_size=50,
        lanes=2,
        progress=progress,
        should_stop=should_stop,
        report_every=2,
    )
    assert progress_threads == {caller} and stop_threads == {caller}
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.5
    last = events[-1]
    assert (last.step, last.steps, last.epoch) == (12, 12, 2)
    # The pack's mean: the lanes' losses weighted by their networks (2 and 2), the networks' own last losses.
    assert last.loss == pytest.approx(float(np.mean([s.loss for s in stats])), rel=1e-5)
    assert last.accuracy == pytest.approx(float(np.mean([s.accuracy for s in stats])), rel=1e-5)


def test_a_stop_or_a_diverging_network_ends_every_lane(digits: ArrayDataset, two_threads: None) -> None:
    def stop_soon() -> bool:
        return True

    # The caller polls should_stop every LANE_POLL_SECONDS while the lanes train, so they stop a few steps
    # after it says so (at step 3 of 150 in a loaded full test run, asked on the third poll): long before
    # the end.
    with pytest.raises(Cancelled, match=r"stopped at epoch \d+/50") as stopped:
        fit_packed(
            [fresh(s) for s in SEEDS], digits, [None] * 4, seeds=SEEDS, epochs=50, lr=0.05, lanes=2,
            should_stop=stop_soon,
        )  # fmt: skip
    assert int(str(stopped.value).split("step ")[1].split("/")[0]) < 50
    assert lane_threads() == [] and torch.get_num_threads() == 2

    models = [fresh(s) for s in SEEDS]
    with torch.no_grad():
        models[3].linear.weight.fill_(float("nan"))  # network 3: the second of lane 1
    with pytest.raises(Diverged, match="in model 3 of the pack"):
        fit_packed(models, digits, [None] * 4, seeds=SEEDS, epochs=50, lr=0.05, batch_size=50, lanes=2)
    assert lane_threads() == [] and torch.get_num_threads() == 2


WHO: ContextVar[str] = ContextVar("who", default="nobody")


def test_each_lane_prepares_its_own_sub_pack_in_a_copy_of_the_callers_context(
    digits: ArrayDataset, two_threads: None
) -> None:
    """prepare (a method's hooks) is entered once per lane, on that lane's sub-pack, in that lane's thread, with
    the caller's context variables (a job's id for its log lines; fit's compile default)."""
    seen: list[tuple[int, int, str]] = []

    def prepare(pack: PackedNet) -> AbstractContextManager[None]:
        seen.append((pack.k, threading.get_ident(), WHO.get()))
        return nullcontext()

    token = WHO.set("job-7")
    try:
        fit_packed(
            [fresh(s) for s in SEEDS[:3]], digits, [None] * 3, seeds=SEEDS[:3], epochs=1, lr=0.05,
            batch_size=100, lanes=2, prepare=prepare,
        )  # fmt: skip
    finally:
        WHO.reset(token)
    assert sorted(k for k, _, _ in seen) == [1, 2]  # 3 networks: lanes of 2 and 1
    assert len({t for _, t, _ in seen}) == 2 and threading.get_ident() not in {t for _, t, _ in seen}
    assert {who for _, _, who in seen} == {"job-7"}

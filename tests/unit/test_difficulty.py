"""by_difficulty: forget samples cut into groups by the references' mean statistic, hardest first, each with
the gap the unlearned group leaves in the references' units."""

from __future__ import annotations

import numpy as np
import pytest

from ml.metrics.difficulty import by_difficulty


def _groups(shift_hardest: float) -> tuple[np.ndarray, np.ndarray]:
    """20 references over 10 samples whose means are 0 to 9 (in shuffled order) with std exactly 1, and an
    unlearned group equal to them but shifted by shift_hardest on the two hardest samples."""
    rng = np.random.default_rng(0)
    means = np.arange(10, dtype=float)[rng.permutation(10)]  # the order of samples says nothing
    noise = rng.standard_normal((20, 10))
    noise = (noise - noise.mean(0)) / noise.std(0)  # exactly mean 0, std 1 per sample
    reference = means + noise
    unlearned = reference.copy()
    hardest = np.argsort(means)[:2]
    unlearned[:, hardest] += shift_hardest
    return reference, unlearned


def test_a_trace_left_on_the_hardest_samples_shows_in_the_first_group_only() -> None:
    reference, unlearned = _groups(shift_hardest=3.0)
    groups = by_difficulty(reference, unlearned, bins=5)
    assert [g.n_samples for g in groups] == [2, 2, 2, 2, 2]
    assert [g.reference_mean for g in groups] == pytest.approx([0.5, 2.5, 4.5, 6.5, 8.5])
    assert [g.gap for g in groups] == pytest.approx([3.0, 0.0, 0.0, 0.0, 0.0])
    assert groups[0].unlearned_mean == pytest.approx(3.5)
    assert [g.reference_std for g in groups] == pytest.approx([1.0] * 5)
    assert groups[0].to_json()["gap"] == 3.0 and groups[0].to_json()["n_samples"] == 2


def test_groups_are_as_even_as_the_sample_count_allows_and_bins_are_checked() -> None:
    reference, unlearned = _groups(shift_hardest=0.0)
    assert [g.n_samples for g in by_difficulty(reference, unlearned, bins=3)] == [4, 3, 3]
    assert [g.gap for g in by_difficulty(reference, unlearned, bins=1)] == pytest.approx([0.0])
    with pytest.raises(ValueError, match="bins"):
        by_difficulty(reference, unlearned, bins=11)
    with pytest.raises(ValueError, match="same samples"):
        by_difficulty(reference, unlearned[:, :9])


def test_a_sample_all_references_agree_on_counts_in_the_groups_mean_std() -> None:
    reference = np.array([[0.0, 1.0], [0.0, 3.0]])  # sample 0: std 0; sample 1: std 1
    unlearned = np.array([[1.0, 2.0], [1.0, 2.0]])
    (group,) = by_difficulty(reference, unlearned, bins=1)
    # sample 0 scaled by the group's mean std (0.5): 1 / 0.5 = 2; sample 1: 0 / 1 = 0.
    assert group.gap == pytest.approx(1.0)

"""How many models per group an evaluation needs: chosen from a target resolution, or checked against it."""

from __future__ import annotations

from functools import lru_cache

from ml.metrics.epsilon import epsilon_ceiling
from ml.metrics.resolution import models_for_ceiling, null_epsilon

MAX_GROUP = 512
"""The most models per group an evaluation may ask for (as the API's n_models)."""
SEARCH_LIMIT = 64
"""Retrain against retrain is simulated up to this group size; past the first uncensored size it stays so."""


def retrain_is_censored(n_models: int, delta: float) -> bool:
    """Whether two groups of n retrained models already score at the ceiling or infinite (it simulates)."""
    return null_epsilon(n_models, n_models, delta).censored


@lru_cache(maxsize=64)
def fewest_uncensored(delta: float) -> int:
    """The fewest models per group at which retrain against retrain is no longer censored (cached).

    Measured at delta 0.05: censored up to 4 models per group, not from 5 on (the ceiling grows like
    ln n while the retrain-against-retrain figure falls), so the search stops at the first uncensored size.
    """
    n = 2
    while n < SEARCH_LIMIT and retrain_is_censored(n, delta):
        n += 1
    return n


def plan_n_models(requested: int | None, delta: float, target: float) -> tuple[int, list[str]]:
    """Models per group (requested, or the fewest whose ceiling reaches target) and warnings about it.

    It warns when the group size cannot tell the method from retrain: when even two groups of retrained
    models would be censored, and when the ceiling stays below the target resolution.
    """
    needed = models_for_ceiling(target, delta)
    n = requested if requested is not None else min(MAX_GROUP, needed or MAX_GROUP)
    warnings = []
    ceiling = epsilon_ceiling(n, n, delta)
    if n < fewest_uncensored(delta):
        warnings.append(
            f"with {n} models per group even two groups of retrained models score at the ceiling or "
            f"infinite, so this evaluation cannot tell the method from retrain; use at least "
            f"{fewest_uncensored(delta)} models per group"
        )
    if not ceiling >= target:
        reach = (
            f"{needed} models per group reach it"
            if needed and needed <= MAX_GROUP
            else "no allowed group size reaches it"
        )
        shown = "no finite value" if ceiling != ceiling else f"only up to {ceiling:.3f}"
        warnings.append(
            f"with {n} models per group epsilon-hat resolves {shown} at delta {delta:g}, below the target "
            f"resolution {target:g} (LETHE_TARGET_EPSILON_CEILING): a method whose epsilon lies above it "
            f"scores the ceiling or inf, whatever its true value; {reach}"
        )
    return n, warnings

"""What an epsilon-hat can and cannot say at a given number of models: interval over the model draw,
a continuous companion estimator, and the group size a target resolution needs.

* `bootstrap_models`: resample the reference models and the unlearned models with replacement, each
  group within itself, recompute the study's epsilon-hat on every replicate, and take the 2.5% and 97.5%
  order statistics (the lower one rounded down, the upper one rounded up, so no arithmetic touches an
  infinite replicate). It is the uncertainty of the headline figure over which models happened to be
  trained; the study's ci95 is the spread of per-sample values and says nothing about that.
* `bootstrap_excess`: the same resampling for a method's excess over finetune,
  (eps - eps_retrain) / (eps_finetune - eps_retrain), with the method, retrain and finetune scored against
  one resampled reference group per replicate; replicates where the ratio says nothing (finetune not above
  retrain) widen the interval to whatever they could hold. `excess_replicates` gives the replicates'
  numerators and denominators, which sum over forget sets to the pooled excess (`excess_interval`).
* `smooth_per_sample` / `epsilon_hat_smooth`: per sample, the (epsilon, delta) of the likelihood-ratio
  test between the two fitted Gaussians themselves, N(mu_r, s_r) and N(mu_u, s_u), instead of the
  empirical error rates of n models. The test that calls a value "unlearned" when
  N(x; u) / N(x; r) >= t accepts a half-line (equal stds), the outside of an interval (s_u > s_r) or an
  interval (s_u < s_r); its FPR (reference values accepted) and FNR (unlearned values rejected) are normal
  CDFs at the region's ends. The same expression as the study, with its 1e-8 offsets, is maximised over
  every threshold (a fine grid of the region's boundary, refined by golden-section search), and the median
  over samples is taken as the study does. It assumes the per-sample statistic is Gaussian in each group
  (the study's own assumption when it scores by the fitted densities) and that the fitted mean and
  population std are the group's; it has no ceiling and is finite unless a group's values are all equal.
* `models_for_ceiling`: the fewest models per group (equal groups) whose ceiling reaches a target.
* `null_epsilon`: what two groups of retrained models score at given group sizes (Gaussian statistic);
  when even that is censored, no method can be told from retrain with so few models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from ml.metrics.epsilon import (
    DEFAULT_DELTA,
    LOG_OFFSET,
    EpsilonResult,
    _deltas,
    _per_sample_epsilons,
    _statistics_pair,
    epsilon_ceiling,
    epsilon_from_statistics,
    json_number,
    nanmedian_rows,
)

BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_ELEMENTS = 20_000_000
"""Replicates x samples x models one bootstrap may cost; larger inputs get fewer replicates (at least 100)."""
MIN_REPLICATES = 100
_CHUNK_ELEMENTS = 1 << 22
_GRID = 513
_TAIL = 10.0
"""Grid edges lie this many stds beyond both means: a normal tail there is below 1e-23, far under 1e-8."""
_GOLDEN_STEPS = 60
_SMOOTH_BLOCK = 2048
"""Samples per block of the smooth estimator, so its [samples, grid] arrays stay near 8 MB each."""
MAX_MODELS = 1_000_000
"""models_for_ceiling gives up above this group size (a target beyond ln(~1e6))."""


@dataclass(frozen=True)
class BootstrapInterval:
    """Percentile interval of epsilon-hat over resampled models, with what it was made of."""

    low: float
    high: float
    n_boot: int
    n_infinite: int
    """Replicates whose epsilon-hat was infinite."""


def bootstrap_models(
    reference: np.ndarray,
    unlearned: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    n_boot: int | None = None,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapInterval:
    """Interval of the study's epsilon-hat over the draw of models: [M_r, n], [M_u, n] statistics in.

    n_boot defaults to 1000, fewer (down to 100) when samples x models is large.
    """
    medians = bootstrap_replicates(reference, unlearned, delta=delta, n_boot=n_boot, seed=seed)
    low, high = order_statistic_interval(medians, level)
    return BootstrapInterval(low, high, medians.size, int(np.isinf(medians).sum()))


def bootstrap_replicates(
    reference: np.ndarray,
    unlearned: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    n_boot: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The exact epsilon-hat of each replicate [n_boot]: M_r reference and M_u unlearned models resampled.

    Replicate k uses rows rng.integers(0, M_r, (n_boot, M_r))[k] and rng.integers(0, M_u, (n_boot, M_u))[k]
    of a numpy Generator seeded with seed; replicates are stacked as extra samples so that a chunk of them
    is one vectorised call.
    """
    return shared_replicates(reference, [unlearned], delta=delta, n_boot=n_boot, seed=seed)[0]


def shared_replicates(
    reference: np.ndarray,
    groups: list[np.ndarray],
    *,
    delta: float = DEFAULT_DELTA,
    n_boot: int | None = None,
    seed: int = 0,
) -> list[np.ndarray]:
    """Epsilon-hat per replicate [n_boot] of each group ([M, n], all the same M) against [M_r, n] references.

    Every group is scored against the same resampled references (rows rng.integers(0, M_r, (n_boot, M_r)))
    and resampled with the same row of indices (rng.integers(0, M, (n_boot, M)), drawn next from the same
    Generator), so the groups' figures move together replicate by replicate; n_boot defaults as for one
    group. One group is bootstrap_replicates.
    """
    pairs = [_statistics_pair(reference, g) for g in groups]
    ref = pairs[0][0]
    unls = [u for _, u in pairs]
    if len({u.shape for u in unls}) != 1:
        raise ValueError(f"the groups must hold as many models each, got {[tuple(u.T.shape) for u in unls]}")
    d = _deltas(np.asarray([delta]))
    n, m_r = ref.shape
    m_u = unls[0].shape[1]
    n_boot = _replicate_count(n * (m_r + m_u), n_boot)
    rng = np.random.default_rng(seed)
    ref_idx = rng.integers(0, m_r, size=(n_boot, m_r))
    idx = rng.integers(0, m_u, size=(n_boot, m_u))
    return [_replicate_medians(ref, u, d, ref_idx, idx) for u in unls]


def _replicate_count(per_replicate: int, n_boot: int | None) -> int:
    """n_boot as asked, or the default for replicates of per_replicate elements (samples x models)."""
    if n_boot is None:
        n_boot = int(min(BOOTSTRAP_REPLICATES, max(MIN_REPLICATES, BOOTSTRAP_ELEMENTS // per_replicate)))
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    return n_boot


def _replicate_medians(
    ref: np.ndarray, unl: np.ndarray, d: np.ndarray, ref_idx: np.ndarray, unl_idx: np.ndarray
) -> np.ndarray:
    """Epsilon-hat of each replicate: [n, M_r] and [n, M_u] statistics, rows of model indices per replicate."""
    n, m_r = ref.shape
    m_u = unl.shape[1]
    n_boot = ref_idx.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // (n * (m_r + m_u)))
    medians = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        b = stop - start
        # [n, b, M] -> [b, n, M] -> [b * n, M]: each replicate is a block of n extra "samples".
        r = np.ascontiguousarray(ref[:, ref_idx[start:stop]].transpose(1, 0, 2)).reshape(b * n, m_r)
        u = np.ascontiguousarray(unl[:, unl_idx[start:stop]].transpose(1, 0, 2)).reshape(b * n, m_u)
        medians[start:stop] = nanmedian_rows(_per_sample_epsilons(r, u, d)[0].reshape(b, n))
    return medians


@dataclass(frozen=True)
class ExcessInterval:
    """Percentile interval of a method's excess over finetune, (eps - eps_retrain) / (eps_finetune - eps_retrain)."""

    low: float
    high: float
    n_boot: int
    n_unresolved: int
    """Replicates whose ratio says nothing: finetune not above retrain, or either of them infinite.
    They count as -inf for the low end and +inf for the high end, so the interval covers whatever they hold."""


def bootstrap_excess(
    reference: np.ndarray,
    method: np.ndarray,
    retrain: np.ndarray,
    finetune: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    n_boot: int | None = None,
    seed: int = 0,
    level: float = 0.95,
) -> ExcessInterval:
    """Interval of a method's excess over the draw of models: [M_r, n] reference, [M, n] each group."""
    gap, scale = excess_replicates(
        reference, method, retrain, finetune, delta=delta, n_boot=n_boot, seed=seed
    )
    return excess_interval(gap, scale, level)


def excess_replicates(
    reference: np.ndarray,
    method: np.ndarray,
    retrain: np.ndarray,
    finetune: np.ndarray,
    *,
    delta: float = DEFAULT_DELTA,
    n_boot: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate [n_boot], eps(method) - eps(retrain) and eps(finetune) - eps(retrain).

    One replicate resamples the reference models once and the three groups with one shared row of indices
    (so where run i of every group starts from original i, the originals are what is resampled), and
    scores the method, retrain and finetune against the same resampled references (shared_replicates): the
    three epsilon-hats move together as they do in the figure itself. n_boot defaults as bootstrap_models'
    does for one group. Summed over forget sets (equal n_boot), they give the pooled excess's replicates.
    """
    eps_m, eps_r, eps_f = shared_replicates(
        reference, [method, retrain, finetune], delta=delta, n_boot=n_boot, seed=seed
    )
    return excess_gaps(eps_m, eps_r, eps_f)


def excess_gaps(eps: np.ndarray, retrain: np.ndarray, finetune: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate, eps - retrain and finetune - retrain (NaN where both sides are infinite)."""
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, which excess_interval counts as unresolved
        return eps - retrain, finetune - retrain


def excess_interval(gap: np.ndarray, scale: np.ndarray, level: float = 0.95) -> ExcessInterval:
    """Percentile interval of gap / scale over replicates; a replicate whose scale is not positive and finite
    (finetune not above retrain, or censored) is unresolved."""
    with np.errstate(all="ignore"):
        ratio = gap / scale
    unresolved = ~((scale > 0) & np.isfinite(scale)) | np.isnan(ratio)
    low = order_statistic_interval(np.where(unresolved, -np.inf, ratio), level)[0]
    high = order_statistic_interval(np.where(unresolved, np.inf, ratio), level)[1]
    return ExcessInterval(low, high, int(ratio.size), int(unresolved.sum()))


def order_statistic_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Outward-rounded percentile interval of values that may be infinite; NaN ignored, (NaN, NaN) if all are."""
    v = np.sort(np.asarray(values, dtype=np.float64)[~np.isnan(values)])
    if v.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    return float(v[math.floor(tail * (v.size - 1))]), float(v[math.ceil((1 - tail) * (v.size - 1))])


def _normal_masses(
    low: np.ndarray, high: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """P(low <= X <= high) and its complement for X ~ N(mean, std), each from the accurate tail."""
    zl, zh = (low - mean) / std, (high - mean) / std
    outside = ndtr(zl) + ndtr(-zh)
    inside = np.where(zl > 0, ndtr(-zl) - ndtr(-zh), ndtr(zh) - ndtr(zl))
    return inside, outside


def smooth_per_sample(
    reference: np.ndarray, unlearned: np.ndarray, delta: float = DEFAULT_DELTA
) -> np.ndarray:
    """Per-sample epsilon of the exact LR test between the two fitted Gaussians: [M_r, n], [M_u, n] -> [n].

    +inf where a group's values are all equal and the fits differ (a point mass is perfectly separable
    from anything else), NaN where both fits are the same point mass or the same Gaussian.
    """
    ref, unl = _statistics_pair(reference, unlearned)
    d = float(_deltas(np.asarray([delta]))[0])
    mu_r, s_r = ref.mean(axis=1), ref.std(axis=1)
    mu_u, s_u = unl.mean(axis=1), unl.std(axis=1)
    out = np.full(mu_r.shape, np.nan)
    point = (s_r == 0) | (s_u == 0)
    out[point & ~((s_r == 0) & (s_u == 0) & (mu_r == mu_u))] = np.inf
    live = ~point & ~((mu_r == mu_u) & (s_r == s_u))
    # Reference units: reference N(0, 1), unlearned N(m, s). log LR = (1 - 1/s^2) x^2 / 2 + m x / s^2 + c.
    rows = np.flatnonzero(live)
    m_all = (mu_u[rows] - mu_r[rows]) / s_r[rows]
    s_all = s_u[rows] / s_r[rows]
    for start in range(0, rows.size, _SMOOTH_BLOCK):
        block = slice(start, start + _SMOOTH_BLOCK)
        out[rows[block]] = _smooth_block(m_all[block], s_all[block], d)
    return out


def _smooth_block(m: np.ndarray, s: np.ndarray, d: float) -> np.ndarray:
    """Smooth per-sample epsilons [k] for unlearned fits N(m, s) against the reference N(0, 1)."""
    zero, one = np.zeros_like(m), np.ones_like(m)
    linear = s == 1
    # Accepted region: outside [l, h] when s > 1 (or x >= p when linear and m > 0), inside [l, h] when
    # s < 1 (or x <= p when linear and m < 0); [l, h] is symmetric about the vertex x0 = m / (1 - s^2).
    outside_kind = np.where(linear, m > 0, s > 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        x0 = np.where(linear, 0.0, m / (1 - s**2))
    lo = np.minimum(-_TAIL, m - _TAIL * s)
    hi = np.maximum(_TAIL, m + _TAIL * s)
    # Parametrise by the region's end near the data, p; the other end, 2 x0 - p, may be far away.
    right = x0 >= (lo + hi) / 2
    p_lo = np.where(linear | right, lo, np.maximum(x0, lo))
    p_hi = np.where(linear | ~right, hi, np.minimum(x0, hi))

    def objective(p: np.ndarray) -> np.ndarray:
        """The study's expression at boundary p ([k, G] or [k]), NaN where neither form is defined."""
        shape = (-1,) + (1,) * (p.ndim - 1)
        far = 2 * x0.reshape(shape) - p
        lin, rt = linear.reshape(shape), right.reshape(shape)
        low = np.where(lin, -np.inf, np.where(rt, p, far))
        high = np.where(lin, p, np.where(rt, far, p))
        in_r, out_r = _normal_masses(low, high, zero.reshape(shape), one.reshape(shape))
        in_u, out_u = _normal_masses(low, high, m.reshape(shape), s.reshape(shape))
        kind = outside_kind.reshape(shape)
        fpr = np.where(kind, out_r, in_r)
        fnr = np.where(kind, in_u, out_u)
        with np.errstate(all="ignore"):
            first = np.log(1 - d - fpr + LOG_OFFSET) - np.log(fnr + LOG_OFFSET)
            second = np.log(1 - d - fnr + LOG_OFFSET) - np.log(fpr + LOG_OFFSET)
        return np.fmax(first, second)

    steps = np.linspace(0.0, 1.0, _GRID)
    grid = p_lo[:, None] + (p_hi - p_lo)[:, None] * steps[None, :]
    values = objective(grid)
    defined = ~np.isnan(values).all(axis=1)
    best = np.argmax(np.where(np.isnan(values), -np.inf, values), axis=1)
    best_value = values[np.arange(best.size), best]
    # Golden-section search between the best grid point's neighbours (the maximum lies there).
    a = grid[np.arange(best.size), np.maximum(best - 1, 0)]
    b = grid[np.arange(best.size), np.minimum(best + 1, _GRID - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(_GOLDEN_STEPS):
        c1, c2 = b - ratio * (b - a), a + ratio * (b - a)
        f1, f2 = np.nan_to_num(objective(c1), nan=-np.inf), np.nan_to_num(objective(c2), nan=-np.inf)
        left = f1 >= f2
        b = np.where(left, c2, b)
        a = np.where(left, a, c1)
    refined = np.fmax(best_value, objective((a + b) / 2))
    return np.where(defined, refined, np.nan)


def epsilon_hat_smooth(reference: np.ndarray, unlearned: np.ndarray, delta: float = DEFAULT_DELTA) -> float:
    """Median over samples of the smooth per-sample epsilon, NaN ignored and infinities counted."""
    return float(nanmedian_rows(smooth_per_sample(reference, unlearned, delta)[None])[0])


def models_for_ceiling(target: float, delta: float = DEFAULT_DELTA) -> int | None:
    """Fewest models per group (equal groups) whose ceiling reaches target; None beyond MAX_MODELS.

    The ceiling is about ln((1 - delta) n - 1), so n is near (e^target + 1) / (1 - delta); the exact
    ceiling (with the study's 1e-8 offsets) decides at the boundary.
    """
    if not math.isfinite(target) or target > math.log(MAX_MODELS):
        return None
    n = max(2, math.ceil((math.exp(target) + 1) / (1 - delta)))
    while n > 2 and epsilon_ceiling(n - 1, n - 1, delta) >= target:
        n -= 1
    while not epsilon_ceiling(n, n, delta) >= target:
        n += 1
    return n


@dataclass(frozen=True)
class Resolution:
    """The study's epsilon-hat's resolution, its interval over the model draw and the smooth companion."""

    epsilon_ceiling: float
    n_at_ceiling: int
    n_infinite: int
    censored: bool
    interval: BootstrapInterval
    smooth: float
    models_to_resolve: int | None
    """When censored: models per group whose ceiling exceeds both the smooth estimate and today's ceiling."""

    def to_json(self) -> dict[str, object]:
        """JSON-safe: infinities as "inf", NaN as null."""
        return {
            "epsilon_ceiling": json_number(self.epsilon_ceiling),
            "n_at_ceiling": self.n_at_ceiling,
            "n_infinite": self.n_infinite,
            "censored": self.censored,
            "epsilon_hat_ci95_models": [json_number(self.interval.low), json_number(self.interval.high)],
            "bootstrap_replicates": self.interval.n_boot,
            "epsilon_hat_smooth": json_number(self.smooth),
            "models_to_resolve": self.models_to_resolve,
            "resolution_note": self.note(),
        }

    def note(self) -> str:
        """One sentence for people: whether the figure is censored and what would resolve it."""
        if math.isnan(self.epsilon_ceiling):
            return "no per-sample epsilon can be finite with a group of one model: add models"
        if not self.censored:
            return (
                f"resolved: below the ceiling {self.epsilon_ceiling:.3f} that these group sizes allow "
                f"({self.n_at_ceiling} samples at it, {self.n_infinite} infinite)"
            )
        more = (
            f"about {self.models_to_resolve} models per group would resolve it"
            if self.models_to_resolve is not None
            else "no practical number of models would resolve it"
        )
        return (
            f"censored: at least half the samples are at the ceiling {self.epsilon_ceiling:.3f} or infinite "
            f"({self.n_at_ceiling} at it, {self.n_infinite} infinite), so the true figure may be higher; {more}"
        )


def resolution(
    exact: EpsilonResult,
    reference: np.ndarray,
    unlearned: np.ndarray,
    *,
    n_boot: int | None = None,
    seed: int = 0,
) -> Resolution:
    """Everything beside the headline epsilon-hat that says how far to trust it, from the [M, n] statistics it came from."""
    smooth = epsilon_hat_smooth(reference, unlearned, exact.delta)
    needed = None
    if exact.censored and not math.isnan(exact.epsilon_ceiling):
        # fmax: an undefined smooth estimate (every sample NaN) falls back to today's ceiling.
        needed = models_for_ceiling(
            float(np.nextafter(np.fmax(smooth, exact.epsilon_ceiling), np.inf)), exact.delta
        )
    return Resolution(
        epsilon_ceiling=exact.epsilon_ceiling,
        n_at_ceiling=exact.n_at_ceiling,
        n_infinite=exact.n_infinite,
        censored=exact.censored,
        interval=bootstrap_models(reference, unlearned, delta=exact.delta, n_boot=n_boot, seed=seed),
        smooth=smooth,
        models_to_resolve=needed,
    )


NULL_SAMPLES = 4000
"""Simulated samples behind null_epsilon: the censored share is then known to about +-1.6% (two std)."""


def null_epsilon(n_reference: int, n_unlearned: int, delta: float = DEFAULT_DELTA) -> EpsilonResult:
    """The study's epsilon-hat of two groups drawn from one Gaussian: what retrain against retrain scores.

    The likelihood-ratio scores do not change when every value is shifted or scaled alike, so with a
    Gaussian statistic this depends on the group sizes and delta only; it is simulated (seeded, 4000
    samples). With 40 + 40 models it gives 0.85, close to the study's published 0.875 for its two halves of
    80 retrained models.
    """
    rng = np.random.default_rng(0)
    return epsilon_from_statistics(
        rng.normal(size=(n_reference, NULL_SAMPLES)),
        rng.normal(size=(n_unlearned, NULL_SAMPLES)),
        delta=delta,
        curve_deltas=np.empty(0),
    )

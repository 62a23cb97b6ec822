"""Which unlearning methods run packed (K seeds trained together, ml/methods/packed.py); torch-free.

The fan-out (core/evaluations.py) reads this to queue an evaluation's unlearned runs K per task; the methods
themselves live in ml/methods/packed.py (and ml/methods/packed_loops.py for those with a loop of their own),
and a unit test keeps the two lists equal.
"""

from __future__ import annotations

PACKED_METHODS = frozenset(
    {
        "finetune",
        "retrain",
        "random_label",
        "l1_sparse",
        "salun",
        "gradient_ascent",
        "poison",
        "poison_full",
        "neggrad_plus",
        "scrub",
        "hybrid",
        "prune",
        "prune_last_layer",
        "prune_complex",
        "activation_reset",
        "noise_reset",
    }
)
"""Methods whose every training stage is the trainer's fit (plus elementwise gradient hooks: gradient_ascent,
l1_sparse, salun), or whose own
loop takes batches a pack can serve side by side (neggrad_plus's retain and forget batch, scrub's batch and
its teacher's outputs for it), or that end by repairing on the retain set after stages each network runs
alone (hybrid, the prune family, activation_reset, noise_reset): they pack."""


def packable(method: str) -> bool:
    """Whether an evaluation's runs of `method` train K per task; the others run one per task."""
    return method in PACKED_METHODS

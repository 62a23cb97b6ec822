"""Typed parameters of every unlearning method, torch-free so the API can validate requests cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from ml.specs import Recipe, Strict


class MethodParams(Strict):
    """Shared optimiser settings (the study: SGD, momentum 0.9, Nesterov, weight decay 5e-4, batch 128)."""

    batch_size: int = Field(128, ge=1, le=8192)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, le=1)
    augment: bool = Field(False, description="apply the model recipe's augmentation to the method's training")


class NoneParams(Strict):
    """No parameters: the model is returned unchanged (a copy)."""


class FinetuneParams(MethodParams):
    epochs: int = Field(5, ge=1, le=1000)
    lr: float = Field(0.001, gt=0, le=10)


class RetrainParams(Strict):
    recipe: Recipe | None = Field(None, description="training recipe; default: the model's own recipe")


class PoisonParams(MethodParams):
    epochs: int = Field(1, ge=1, le=1000)
    lr: float = Field(0.0007, gt=0, le=10)


class PoisonFullParams(MethodParams):
    epochs: int = Field(5, ge=1, le=1000)
    lr: float = Field(0.002, gt=0, le=10)


class RepairParams(MethodParams):
    """Fine-tuning on the retain set after a reset; epochs=0 leaves the reset alone, to inspect it."""

    epochs: int = Field(5, ge=0, le=1000)
    lr: float = Field(0.001, gt=0, le=10)


class HybridParams(RepairParams):
    poison_epochs: int = Field(1, ge=1, le=1000, description="epochs on the forget set with random labels")
    poison_lr: float = Field(0.01, gt=0, le=10)


class PruneParams(RepairParams):
    overfit_epochs: int = Field(20, ge=1, le=1000, description="at most this many epochs overfitting a copy")
    overfit_lr: float = Field(0.01, gt=0, le=10)
    overfit_target: float = Field(
        0.99, gt=0, le=1, description="stop overfitting once the copy's accuracy on its set reaches this"
    )
    quantile: float = Field(
        0.30, gt=0, lt=1, description="re-initialise weights whose change is below this quantile"
    )


class PruneLastLayerParams(PruneParams):
    """As prune, but only the final linear layer's weights are compared and re-initialised."""


class PruneComplexParams(PruneParams):
    retain_fraction: float = Field(
        0.02, gt=0, le=1, description="share of the retain set the second copy overfits"
    )
    retain_overfit_lr: float = Field(
        0.01 / 3, gt=0, le=10, description="the study meant 0.01 / 3 but wrote 0.01 // 3, which is 0"
    )


class ActivationResetParams(RepairParams):
    threshold: float = Field(
        0.8,
        ge=0,
        lt=1,
        description="reset a conv kernel when more than this share of its activations is higher on forget",
    )


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    params: type[Strict]


METHOD_SPECS: dict[str, MethodSpec] = {}


def _spec(name: str, description: str, params: type[Strict]) -> None:
    METHOD_SPECS[name] = MethodSpec(name, description, params)


_spec("none", "Return an unchanged copy of the model: the worst case, a floor for evaluations.", NoneParams)
_spec("finetune", "Fine-tune on the retain set (5 epochs, lr 0.001).", FinetuneParams)
_spec(
    "retrain", "Train from scratch on the retain set with the full recipe: the gold standard.", RetrainParams
)
_spec("poison", "Train 1 epoch on the forget set with uniformly random labels (lr 0.0007).", PoisonParams)
_spec(
    "poison_full",
    "Train 5 epochs on the retain set plus the forget set with random labels, shuffled (lr 0.002).",
    PoisonFullParams,
)
_spec(
    "hybrid",
    "The study's two stage method: 1 epoch on the poisoned forget set (lr 0.01), then finetune"
    " (5 epochs, lr 0.001).",
    HybridParams,
)
_spec(
    "prune",
    "Selective pruning: re-initialise the 30% of each weight tensor that moved least when a copy"
    " overfit the forget set, then finetune.",
    PruneParams,
)
_spec(
    "prune_last_layer",
    "Selective pruning of the final linear layer only, then finetune.",
    PruneLastLayerParams,
)
_spec(
    "prune_complex",
    "Re-initialise weights that moved least both when overfitting the forget set and a 2% retain sample, then"
    " finetune.",
    PruneComplexParams,
)
_spec(
    "activation_reset",
    "Re-initialise conv kernels that fire more on the forget set than on the retain set, and the"
    " final layer, then finetune.",
    ActivationResetParams,
)


class UnknownMethod(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name
        self.valid = sorted(METHOD_SPECS)

    def __str__(self) -> str:
        return f"unknown method {self.name!r}; valid: {', '.join(self.valid)}"


def method_spec(name: str) -> MethodSpec:
    """Look a method up by name; UnknownMethod lists the valid names."""
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise UnknownMethod(name) from None

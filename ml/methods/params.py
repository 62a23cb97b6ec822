"""Typed parameters of every unlearning method, torch-free so the API can validate requests cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from ml.specs import Recipe, Strict


class MethodParams(Strict):
    """Shared optimiser settings (the study: SGD, momentum 0.9, Nesterov, weight decay 5e-4, batch 128)."""

    batch_size: int = Field(128, ge=1, le=8192)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)


class NoneParams(Strict):
    """No parameters: the model is returned unchanged (a copy)."""


class FinetuneParams(MethodParams):
    epochs: int = Field(5, ge=1, le=1000)
    lr: float = Field(0.001, gt=0, le=10)


class RetrainParams(Strict):
    recipe: Recipe | None = Field(None, description="training recipe; default: the model's own recipe")


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
_spec("retrain", "Train from scratch on the retain set with the full recipe: the gold standard.", RetrainParams)


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

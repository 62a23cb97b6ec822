"""Typed, torch-free specifications shared with the service: architecture and training recipe."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Unknown fields are errors, so a typo in a request never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid")


class ArchSpec(Strict):
    """ResNet-18 variant. width 64 is the standard model; 16 or 8 for CPU."""

    name: Literal["resnet18"] = "resnet18"
    form: Literal["cifar", "imagenet"] = Field(
        "cifar",
        description="cifar: 3x3 stride-1 stem, no max-pool (the study's CIFAR-10 model); imagenet: torchvision's",
    )
    width: int = Field(64, ge=1, le=256, description="channels of the first stage (64 = standard ResNet-18)")
    head: Literal["linear", "mlp"] = Field("linear", description="mlp: the study's AgeDB regression head")


class AugmentSpec(Strict):
    crop_padding: int = Field(
        0, ge=0, le=16, description="random crop after reflect padding by this many pixels"
    )
    flip: bool = Field(False, description="random horizontal flip")
    autoaugment: str | None = Field(
        None, description="torchvision AutoAugment policy: cifar10, imagenet, svhn"
    )


class Recipe(Strict):
    """How to train from scratch (also how reference models and retrain are made)."""

    epochs: int = Field(30, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0, le=1)
    schedule: Literal["none", "multistep", "cosine", "onecycle"] = "cosine"
    milestones: list[int] = Field(
        default_factory=list, description="epochs at which multistep divides the lr"
    )
    gamma: float = Field(0.1, gt=0, le=1)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)

    @model_validator(mode="after")
    def _milestones_in_range(self) -> Recipe:
        bad = [m for m in self.milestones if not 0 < m < self.epochs]
        if bad:
            raise ValueError(f"milestones {bad} must lie strictly between 0 and epochs={self.epochs}")
        return self

    def cut_to(self, epochs: int) -> Recipe:
        """The same recipe over `epochs` epochs, its milestones scaled alike.

        A scaled milestone that lands on 0 or on `epochs` or beyond is dropped: the first would divide the
        rate before any training, the others are never reached.
        """
        scaled = (round(m * epochs / self.epochs) for m in self.milestones)
        return self.model_validate(
            {**self.model_dump(), "epochs": epochs, "milestones": [m for m in scaled if 0 < m < epochs]}
        )


STUDY_CIFAR10_RECIPE = Recipe(
    epochs=100,
    lr=0.1,
    schedule="multistep",
    milestones=[35, 70, 90],
    gamma=0.1,
    augment=AugmentSpec(crop_padding=4, flip=True, autoaugment="cifar10"),
)
"""The study's CIFAR-10 retrain recipe (~95% test accuracy with the full-width model)."""

DEFAULT_RECIPES: dict[str, Recipe] = {
    "cifar10": STUDY_CIFAR10_RECIPE,
    "digits": Recipe(epochs=15, batch_size=64, lr=0.05, schedule="cosine"),
    "fashion_mnist": Recipe(epochs=10, lr=0.05, schedule="cosine", augment=AugmentSpec(crop_padding=2)),
}


def default_recipe(dataset: str) -> Recipe:
    """The recipe a data set trains with when the request gives none."""
    return DEFAULT_RECIPES.get(dataset, Recipe()).model_copy(deep=True)


def recipe_fields(dataset: str, changes: dict[str, Any] | None) -> dict[str, Any]:
    """The data set's recipe with the fields `changes` names replaced, unvalidated: what a request's partial
    recipe means (an "augment" it names replaces the whole augment)."""
    return {**default_recipe(dataset).model_dump(), **(changes or {})}

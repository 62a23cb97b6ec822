"""Import existing ResNet-18 weights: the study's checkpoints and torchvision's resnet18, from safe file formats.

Files are read as tensors only (safetensors, or torch.load with weights_only=True), so a weights file
can never run code. Every import checks keys and shapes against the target model first and names the
first offending key, instead of failing deep inside load_state_dict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ml.models import ResNet18

WRAPPER_KEYS = ("state_dict", "model")
"""Checkpoint dicts that hold the real state dict under one of these keys (Lightning, common scripts)."""

STRIPPED_PREFIXES = ("model.", "module.")
"""Prefixes every key may carry: the study's Lightning module (`model.`), DataParallel (`module.`)."""

_TORCHVISION_RENAMES = (
    (re.compile(r"^(layer\d+\.\d+)\.downsample\."), r"\1.shortcut."),
    (re.compile(r"^fc\."), "linear."),
)


class WeightsError(ValueError):
    """A weights file or state dict cannot be read or does not fit the model."""


def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from a PyTorch file via torch.load(weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"cannot read weights file {path.name}: {exc.__class__.__name__}: {exc}. Expected a .safetensors "
            "file or a PyTorch file holding only tensors (a state dict); objects that need code to "
            "unpickle are refused"
        ) from exc
    return unwrap_state_dict(obj)


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the tensors in a checkpoint: unwrap "state_dict"/"model" and strip a shared model./module. prefix."""
    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            raise WeightsError(
                "the file holds no state dict: expected a mapping of parameter names to tensors, optionally "
                f"under one of {list(WRAPPER_KEYS)}; top-level keys: {sorted(map(str, obj))[:10]}"
            )
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"expected a non-empty mapping of parameter names to tensors, got {type(obj).__name__}"
        )
    state = {str(k): v for k, v in obj.items()}
    stripped = True
    while stripped:
        stripped = False
        for prefix in STRIPPED_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    return state


def _is_tensor_dict(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _study_name(key: str) -> str:
    """The study's name for a torchvision key (downsample -> shortcut, fc -> linear); others unchanged."""
    for pattern, repl in _TORCHVISION_RENAMES:
        key = pattern.sub(repl, key)
    return key


def _study_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key to the study's names, refusing two keys that land on one name."""
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        new = _study_name(key)
        if new in renamed:
            raise WeightsError(f"keys {origin[new]!r} and {key!r} both map to {new!r}")
        renamed[new] = value
        origin[new] = key
    return renamed


def _is_head(key: str) -> bool:
    return key.startswith("linear.")


def check_state_dict(
    model: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    what: str = "weights",
    may_miss: Callable[[str], bool] = lambda key: False,
) -> None:
    """Raise WeightsError naming the first unexpected, missing or wrongly shaped key."""
    expected = model.state_dict()
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise WeightsError(
            f"{what}: key {unexpected[0]!r} does not exist in the model ({len(unexpected)} such keys)"
        )
    # BatchNorm fills a missing num_batches_tracked itself (older checkpoints lack it).
    missing = [
        k for k in expected if k not in state and not k.endswith("num_batches_tracked") and not may_miss(k)
    ]
    if missing:
        raise WeightsError(f"{what}: model key {missing[0]!r} is missing ({len(missing)} missing keys)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{what}: {key!r} is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise WeightsError(
                f"{what}: {key!r} has shape {tuple(value.shape)} but the model expects "
                f"{tuple(expected[key].shape)} (wrong width, form, input channels or class count?)"
            )


def load_study_state_dict(model: ResNet18, state_dict: Mapping[str, Any]) -> None:
    """Load a checkpoint saved by the study's code (any wrapper/prefix); every key must fit, head included."""
    state = _study_names(unwrap_state_dict(state_dict))
    check_state_dict(model, state, what="study checkpoint")
    model.load_state_dict(state, strict=True)


def load_torchvision_resnet18(model: ResNet18, state_dict: Mapping[str, Any]) -> list[str]:
    """Load torchvision resnet18 weights into the imagenet form; returns the file's head keys it skipped.

    downsample.0/1 become shortcut.0/1 and fc becomes linear. The head is loaded only when it fits the
    model exactly (same keys, same shapes); otherwise it is skipped as a whole and keeps its fresh
    initialisation, which is how ImageNet weights (1000 classes) seed a model for another task.
    """
    if model.form != "imagenet":
        raise WeightsError("torchvision resnet18 weights fit only the imagenet form (7x7 stem, max-pool)")
    original = unwrap_state_dict(state_dict)
    state = _study_names(original)
    expected = model.state_dict()
    head = {k: v for k, v in state.items() if _is_head(k)}
    model_head = {k for k in expected if _is_head(k)}
    head_fits = set(head) == model_head and all(
        tuple(v.shape) == tuple(expected[k].shape) for k, v in head.items()
    )
    if head_fits:
        check_state_dict(model, state, what="torchvision weights")
        model.load_state_dict(state, strict=True)
        return []
    body = {k: v for k, v in state.items() if not _is_head(k)}
    check_state_dict(model, body, what="torchvision weights", may_miss=_is_head)
    model.load_state_dict(body, strict=False)
    return sorted(k for k in original if _is_head(_study_name(k)))

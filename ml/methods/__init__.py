"""Unlearning methods behind one registry.

Importing this package stays torch-free (the API imports ml.methods.params to validate requests, and may
price a run with cost); torch and the implementations (study.py, beyond.py and its per-method modules) load
on the first run_method call or when a name below is first used.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from ml.methods.cost import Workload, cost
from ml.methods.params import METHOD_SPECS, MethodSpec, UnknownMethod, method_spec

if TYPE_CHECKING:
    import torch
    from pydantic import BaseModel
    from torch import nn

    from ml.methods.base import UnlearnData
    from ml.trainer import Progress, StopFlag

_LAZY = {"UnlearnData", "Run", "register_method", "registered"}

__all__ = [
    "METHOD_SPECS",
    "MethodSpec",
    "Run",
    "UnknownMethod",
    "UnlearnData",
    "Workload",
    "cost",
    "method_spec",
    "register_method",
    "registered",
    "run_method",
]


def run_method(
    name: str,
    model: nn.Module,
    data: UnlearnData,
    params: BaseModel | dict[str, Any] | None,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    details: dict[str, Any] | None = None,
) -> nn.Module:
    """Unlearn data.forget_ids with a registered method: a new model on `device`, the input untouched.

    `details`, when given, receives what the method decided while running (SSD's alpha, for one)."""
    return _implementations().run(
        name,
        model,
        data,
        params,
        seed=seed,
        device=device,
        progress=progress,
        should_stop=should_stop,
        details=details,
    )


def _implementations() -> ModuleType:
    """ml.methods.base, after importing every module that registers methods (registered() checks them all)."""
    from ml.methods import base, beyond, study  # noqa: F401

    return base


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(_implementations(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

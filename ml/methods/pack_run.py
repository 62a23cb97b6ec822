"""What a packed method is given and where it is registered: ml/methods/packed.py and ml/methods/packed_loops.py
both register their packed forms here, and run_packed() (packed.py) looks them up."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ml.methods.base import Run, UnlearnData
from ml.methods.packing import PACKED_METHODS
from ml.trainer import Progress, StopFlag, derive_seed


@dataclass(frozen=True)
class PackRun:
    """Run for a pack: the K seeds, and the device, progress and stop flag the pack shares."""

    seeds: tuple[int, ...]
    device: torch.device
    progress: Progress | None = None
    should_stop: StopFlag | None = None

    def seeds_for(self, stage: int) -> list[int]:
        """Each network's seed for a stage: Run.seed_for of its own seed."""
        return [derive_seed(seed, stage) for seed in self.seeds]

    def run(self, k: int = 0) -> Run:
        """Network k's Run (for the parts of a method that are not per network: stages, stop checks)."""
        return Run(self.seeds[k], self.device, self.progress, self.should_stop)


PackedMethod = Callable[[list[nn.Module], UnlearnData, Any, PackRun], list[nn.Module]]
PACKED: dict[str, PackedMethod] = {}


def register_packed(name: str) -> Callable[[PackedMethod], PackedMethod]:
    def wrap(fn: PackedMethod) -> PackedMethod:
        if name not in PACKED_METHODS:
            raise ValueError(f"{name!r} is not in ml.methods.packing.PACKED_METHODS")
        PACKED[name] = fn
        return fn

    return wrap

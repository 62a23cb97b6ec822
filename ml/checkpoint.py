"""Model checkpoints as safetensors: plain tensors, no pickled code, loadable anywhere."""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ml.models import ResNet18, build_model
from ml.specs import ArchSpec


def to_bytes(model: nn.Module) -> bytes:
    """The model's state dict (parameters and buffers) as safetensors bytes."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return st_save(state)


def from_bytes(data: bytes, arch: ArchSpec | dict, num_classes: int, in_channels: int) -> ResNet18:
    """Rebuild the architecture and load the weights strictly (every key, every shape)."""
    model = build_model(arch, num_classes, in_channels)
    model.load_state_dict(st_load(data), strict=True)
    return model


def load_file(path: Path, arch: ArchSpec | dict, num_classes: int, in_channels: int) -> ResNet18:
    return from_bytes(Path(path).read_bytes(), arch, num_classes, in_channels)

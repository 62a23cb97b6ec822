"""Batched augmentation and normalisation of uint8 image tensors, run where the data lives (GPU or CPU).

Doing this per batch on the device replaces the study's per-image PIL pipeline, which on a GPU left the
accelerator waiting on the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from ml.specs import AugmentSpec

AUTOAUGMENT_GROUP = 8
"""Images that share one AutoAugment sub-policy draw (torchvision draws once per call, not per image)."""


class Normalizer:
    """uint8 [B, C, H, W] -> float32 normalised input, with the constants kept on the device once."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        std_t = torch.tensor(std, dtype=torch.float32)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(device)
        self.shift = (-mean_t / std_t).view(1, -1, 1, 1).to(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # Written into a freshly allocated tensor so its strides are canonical even for size-1 dimensions:
        # with one channel (digits) the computed result can carry stride 1 on the channel axis, which
        # oneDNN's convolution backward mishandles (20x slower with two threads, heap corruption with one).
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device, memory_format=self.memory_format)
        return torch.addcmul(self.shift, x, self.scale, out=out)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Map indices in [-size+1, 2*size-2] into [0, size) the way reflect padding does (edge not repeated)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded image plus random horizontal flip, as one gather per batch."""
    b, c, h, w = x.shape
    if padding >= min(h, w):
        raise ValueError(f"reflect padding {padding} needs images larger than {padding}px; got {h}x{w}")
    dev = x.device
    rows = torch.arange(h, device=dev).expand(b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    if padding:
        span = 2 * padding + 1
        dy = torch.randint(0, span, (b, 1), device=dev, generator=generator) - padding
        dx = torch.randint(0, span, (b, 1), device=dev, generator=generator) - padding
        rows = _reflect(rows + dy, h)
        cols = _reflect(cols + dx, w)
    if flip:
        flipped = torch.rand((b, 1), device=dev, generator=generator) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
    chan = torch.arange(c, device=dev).view(1, c, 1, 1)
    return x[batch, chan, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


class AutoAugment:
    """torchvision's AutoAugment on uint8 batches; each group of AUTOAUGMENT_GROUP images draws a sub-policy.

    It draws from torch's global generator, which the trainer seeds, so runs stay reproducible.
    """

    def __init__(self, policy: str, group: int = AUTOAUGMENT_GROUP) -> None:
        try:
            chosen = v2.AutoAugmentPolicy(policy)
        except ValueError:
            valid = ", ".join(p.value for p in v2.AutoAugmentPolicy)
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {valid}") from None
        self.transform = v2.AutoAugment(chosen)
        self.group = group

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.transform(part) for part in x.split(self.group)])


class Augmenter:
    """The recipe's augmentation in the study's order: crop, flip, then AutoAugment."""

    def __init__(self, spec: AugmentSpec, generator: torch.Generator) -> None:
        self.spec = spec
        self.generator = generator
        self.autoaugment = AutoAugment(spec.autoaugment) if spec.autoaugment else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec.crop_padding or self.spec.flip:
            x = crop_flip(x, self.spec.crop_padding, self.spec.flip, self.generator)
        if self.autoaugment is not None:
            x = self.autoaugment(x)
        return x


def build_augmenter(spec: AugmentSpec | None, generator: torch.Generator) -> Augmenter | None:
    """None when the spec asks for nothing, so the training step skips augmentation entirely."""
    if spec is None or not (spec.crop_padding or spec.flip or spec.autoaugment):
        return None
    return Augmenter(spec, generator)

"""Batched augmentation and normalisation of uint8 image tensors, run where the data lives (GPU or CPU).

Doing this per batch on the device replaces the study's per-image PIL pipeline, which on a GPU left the
accelerator waiting on the host. Every image draws its own crop, flip and AutoAugment sub-policy, and a
whole batch is transformed by a fixed number of batched operations (one gather for crop and flip; per
AutoAugment stage, one batched call per kind of operation on the images that drew it), however many images
or packed networks it holds. Draws and their application are separate steps, so a pack of networks
(ml/ensemble.py) draws per network, from each network's own generators, and applies them all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ml.specs import AugmentSpec


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


@dataclass(frozen=True)
class CropFlipDraw:
    """Each image's source rows [b, h] and columns [b, w]: a window of its reflect-padded self, maybe mirrored."""

    rows: torch.Tensor
    cols: torch.Tensor


def draw_crop_flip(
    b: int, h: int, w: int, padding: int, flip: bool, generator: torch.Generator
) -> CropFlipDraw:
    """Per image: an offset in [-padding, padding] on each axis and a fair coin for the flip."""
    if padding >= min(h, w):
        raise ValueError(f"reflect padding {padding} needs images larger than {padding}px; got {h}x{w}")
    dev = generator.device
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
    return CropFlipDraw(rows, cols)


def apply_crop_flip(x: torch.Tensor, draw: CropFlipDraw) -> torch.Tensor:
    """The drawn windows of a batch, as one gather."""
    b, c, h, w = x.shape
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return x[batch, chan, draw.rows.view(b, 1, h, 1), draw.cols.view(b, 1, 1, w)]


def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded image plus random horizontal flip, as one gather per batch."""
    b, _, h, w = x.shape
    return apply_crop_flip(x, draw_crop_flip(b, h, w, padding, flip, generator))


# AutoAugment's operations on a batch of uint8 images, each image with its own magnitude (float64, on the host,
# where the draws are made). Each reproduces torchvision.transforms.v2.functional's kernel for one image
# (interpolation "nearest", fill 0: AutoAugment's defaults); tests/unit/test_augment.py checks them against it.
Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_image(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Host float64 [n] -> float32 [n, 1, 1, 1] on x's device."""
    return values.to(torch.float32).view(-1, 1, 1, 1).to(x.device, non_blocking=True)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(0, 255).to(torch.uint8)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * other per image, clamped and truncated to uint8 as torchvision does."""
    return _to_uint8(torch.addcmul(x.float() * _per_image(factor, x), other, _per_image(1.0 - factor, x)))


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """torchvision's luma of RGB uint8 images, floored, as float [n, 1, H, W]."""
    r, g, b = x.float().unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1).floor_()


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image through its inverse affine map theta [n, 2, 3] (pixel units, centre origin)."""
    n, _, h, w = x.shape
    base = torch.empty(1, h, w, 3, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=x.device).unsqueeze(-1))
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float64)
    rescaled = (theta.transpose(1, 2) / scale).to(torch.float32).to(x.device, non_blocking=True)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def _theta(*entries: torch.Tensor) -> torch.Tensor:
    """[n, 2, 3] inverse affine maps from six per-image entries [n] (row-major)."""
    return torch.stack(entries, -1).view(-1, 2, 3)


def _shear_x(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine(x, _theta(one, m, m * x.shape[2] / 2, zero, one, zero))


def _shear_y(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine(x, _theta(one, zero, zero, m, one, m * x.shape[3] / 2))


def _translate_x(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine(x, _theta(one, zero, -m.trunc(), zero, one, zero))


def _translate_y(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    return _affine(x, _theta(one, zero, zero, zero, one, -m.trunc()))


def _rotate(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    r = torch.deg2rad(-(m % 360))
    cos, sin, zero = r.cos(), r.sin(), torch.zeros_like(m)
    return _affine(x, _theta(cos, sin, zero, -sin, cos, zero))


def _brightness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _to_uint8(x.float() * _per_image(1.0 + m, x))


def _color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else _blend(x, _grayscale(x), 1.0 + m)


def _contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    gray = _grayscale(x) if x.shape[1] == 3 else x.float()
    return _blend(x, gray.mean(dim=(1, 2, 3), keepdim=True), 1.0 + m)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """torchvision's sharpness: blend with the image blurred by [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 inside.

    The blur's numerator is summed exactly in integers, so its rounding is torchvision's: S / 13 for an
    integer S is never within float error of a half, and a depthwise convolution is many times slower here.
    """
    h, w = x.shape[2:]
    if h <= 2 or w <= 2:
        return x
    wide = x.to(torch.int32)
    rows = wide[:, :, :-2] + wide[:, :, 1:-1] + wide[:, :, 2:]
    total = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * wide[:, :, 1:-1, 1:-1]
    blurred = (total.float() / 13.0).round_()
    out = x.float()
    inner = out[..., 1:-1, 1:-1]
    inner.addcmul_(blurred - inner, _per_image(1.0 - (1.0 + m), x))  # 1 - factor, as torchvision rounds it
    return _to_uint8(out)


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    bits = m.to(torch.int64)
    mask = (((1 << bits) - 1) << (8 - bits)).to(torch.uint8).view(-1, 1, 1, 1).to(x.device, non_blocking=True)
    return x & mask


def _solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above 255 * m; for integer pixels that is at or above its ceiling."""
    threshold = (255.0 * m).to(torch.float32).double().ceil().clamp(0, 256).to(torch.int16)
    return torch.where(
        x.to(torch.int16) >= threshold.view(-1, 1, 1, 1).to(x.device, non_blocking=True), 255 - x, x
    )


AUTOAUGMENT_OPS: dict[str, Op] = {
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
    "Rotate": _rotate,
    "Brightness": _brightness,
    "Color": _color,
    "Contrast": _contrast,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda x, m: TF.autocontrast(x),
    "Equalize": lambda x, m: TF.equalize(x),
    "Invert": lambda x, m: TF.invert(x),
}
"""Every operation AutoAugment's policies name, batched with a magnitude per image."""
OP_NAMES = tuple(AUTOAUGMENT_OPS)


@dataclass(frozen=True)
class PolicyDraw:
    """Per stage (2) and image: the operation's index in OP_NAMES (-1: skipped) and its signed magnitude."""

    op: torch.Tensor
    magnitude: torch.Tensor


class AutoAugment:
    """torchvision's AutoAugment policies on uint8 batches, every image drawing its own sub-policy.

    Draws come from a CPU generator (torch's global one when none is given), so choosing which images each
    operation transforms never waits on the device; the probabilities and magnitudes are torchvision's.
    """

    def __init__(self, policy: str) -> None:
        try:
            chosen = v2.AutoAugmentPolicy(policy)
        except ValueError:
            valid = ", ".join(p.value for p in v2.AutoAugmentPolicy)
            raise ValueError(f"unknown AutoAugment policy {policy!r}; valid: {valid}") from None
        reference = v2.AutoAugment(chosen)
        self.policies = reference._policies
        self.space = reference._AUGMENTATION_SPACE
        self._tables: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}

    def _table(self, h: int, w: int) -> tuple[torch.Tensor, ...]:
        """Per (sub-policy, stage): operation index, probability, magnitude, signed; for h x w images."""
        if (h, w) not in self._tables:
            ops, probs, mags, signed = [], [], [], []
            for sub in self.policies:
                for name, prob, level in sub:
                    fn, is_signed = self.space[name]
                    values = fn(10, h, w)
                    ops.append(OP_NAMES.index(name))
                    probs.append(prob)
                    mags.append(0.0 if values is None else float(values[level]))
                    signed.append(is_signed)
            shape = (len(self.policies), 2)
            self._tables[(h, w)] = (
                torch.tensor(ops).view(shape),
                torch.tensor(probs, dtype=torch.float64).view(shape),
                torch.tensor(mags, dtype=torch.float64).view(shape),
                torch.tensor(signed).view(shape),
            )
        return self._tables[(h, w)]

    def draw(self, b: int, h: int, w: int, generator: torch.Generator | None = None) -> PolicyDraw:
        """A sub-policy per image, then per stage whether it applies and the sign of its magnitude."""
        ops, probs, mags, signed = self._table(h, w)
        chosen = torch.randint(len(self.policies), (b,), generator=generator)
        u = torch.rand((2, b), generator=generator, dtype=torch.float64)
        negative = torch.rand((2, b), generator=generator) <= 0.5
        op = ops[chosen].T.clone()
        op[u > probs[chosen].T] = -1
        magnitude = torch.where(signed[chosen].T & negative, -mags[chosen].T, mags[chosen].T)
        return PolicyDraw(op, magnitude)

    def apply(self, x: torch.Tensor, draw: PolicyDraw) -> torch.Tensor:
        """Per stage, one batched call per operation drawn, on the images that drew it."""
        out = x.clone()
        for stage in range(2):
            op = draw.op[stage]
            for index in op.unique().tolist():
                if index < 0:
                    continue
                rows = (op == index).nonzero().flatten()
                on_device = rows.to(x.device, non_blocking=True)
                fn = AUTOAUGMENT_OPS[OP_NAMES[index]]
                out[on_device] = fn(out.index_select(0, on_device), draw.magnitude[stage, rows])
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, self.draw(len(x), x.shape[2], x.shape[3], generator))


@dataclass(frozen=True)
class AugmentDraw:
    """One batch's draws: crop and flip (on the device) and AutoAugment's (on the host); None where unused."""

    crop: CropFlipDraw | None
    policy: PolicyDraw | None

    @staticmethod
    def cat(draws: Sequence[AugmentDraw]) -> AugmentDraw:
        """The draws of several batches (a pack's networks), in order, as one batch's."""
        first = draws[0]
        crop = None
        if first.crop is not None:
            crop = CropFlipDraw(
                torch.cat([d.crop.rows for d in draws]),  # type: ignore[union-attr]
                torch.cat([d.crop.cols for d in draws]),  # type: ignore[union-attr]
            )
        policy = None
        if first.policy is not None:
            policy = PolicyDraw(
                torch.cat([d.policy.op for d in draws], 1),  # type: ignore[union-attr]
                torch.cat([d.policy.magnitude for d in draws], 1),  # type: ignore[union-attr]
            )
        return AugmentDraw(crop, policy)


POLICY_SEED_OFFSET = 0x5EED_A0A0
"""AutoAugment's host generator is seeded with the device generator's seed plus this, apart from its stream."""


class Augmenter:
    """The recipe's augmentation in the study's order: crop, flip, then AutoAugment; reproducible per seed.

    Crop and flip draw from `generator` (on the data's device); AutoAugment from a CPU generator seeded from
    the same seed, so a run's augmentation depends on its seed alone.
    """

    def __init__(self, spec: AugmentSpec, generator: torch.Generator) -> None:
        self.spec = spec
        self.generator = generator
        self.autoaugment = AutoAugment(spec.autoaugment) if spec.autoaugment else None
        self.policy_generator = torch.Generator().manual_seed(
            (generator.initial_seed() + POLICY_SEED_OFFSET) % 2**63
        )

    def draw(self, b: int, h: int, w: int) -> AugmentDraw:
        crop = None
        if self.spec.crop_padding or self.spec.flip:
            crop = draw_crop_flip(b, h, w, self.spec.crop_padding, self.spec.flip, self.generator)
        policy = None
        if self.autoaugment is not None:
            policy = self.autoaugment.draw(b, h, w, self.policy_generator)
        return AugmentDraw(crop, policy)

    def apply(self, x: torch.Tensor, draw: AugmentDraw) -> torch.Tensor:
        if draw.crop is not None:
            x = apply_crop_flip(x, draw.crop)
        if draw.policy is not None and self.autoaugment is not None:
            x = self.autoaugment.apply(x, draw.policy)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.draw(len(x), x.shape[2], x.shape[3]))


def build_augmenter(spec: AugmentSpec | None, generator: torch.Generator) -> Augmenter | None:
    """None when the spec asks for nothing, so the training step skips augmentation entirely."""
    if spec is None or not (spec.crop_padding or spec.flip or spec.autoaugment):
        return None
    return Augmenter(spec, generator)

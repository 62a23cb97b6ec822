"""Batched augmentation: per-image draws, torchvision's operations and probabilities, reproducible per seed."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from ml.augment import (
    AUTOAUGMENT_OPS,
    OP_NAMES,
    AugmentDraw,
    AutoAugment,
    build_augmenter,
)
from ml.specs import AugmentSpec

STUDY = AugmentSpec(crop_padding=4, flip=True, autoaugment="cifar10")


def images(n: int, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 8)])
@pytest.mark.parametrize("name", OP_NAMES)
def test_each_batched_operation_is_torchvisions_per_image(name: str, channels: int, size: int) -> None:
    """Every image gets its own magnitude; each result equals torchvision's kernel on that image alone."""
    reference = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    fn, signed = reference._AUGMENTATION_SPACE[name]
    table = fn(10, size, size)
    levels = [1, 4, 9] if table is not None else [0]
    mags = [0.0 if table is None else float(table[lv]) for lv in levels]
    mags += [-m for m in mags] if signed else []
    x = images(len(mags) * 4, channels, size)
    m = torch.tensor(mags, dtype=torch.float64).repeat_interleave(4)
    out = AUTOAUGMENT_OPS[name](x.clone(), m)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for i in range(len(x)):
        expected = reference._apply_image_or_video_transform(
            x[i], name, float(m[i]), interpolation=reference.interpolation, fill=reference._fill
        )
        assert torch.equal(out[i], expected), (name, float(m[i]))


def test_every_image_draws_its_own_sub_policy_crop_and_flip() -> None:
    aug = build_augmenter(STUDY, torch.Generator().manual_seed(0))
    assert aug is not None
    x = images(1).expand(256, -1, -1, -1).contiguous()  # one image, 256 times
    draw = aug.draw(256, 32, 32)
    out = aug.apply(x, draw)
    assert len({tuple(r) for r in draw.crop.rows.tolist()}) > 1  # type: ignore[union-attr]
    assert 0 < (draw.crop.cols[:, 0] == 31).sum() < 256  # type: ignore[union-attr]  # some flipped, not all
    assert len({tuple(p) for p in draw.policy.op.T.tolist()}) > 10  # type: ignore[union-attr]
    assert len({o.numpy().tobytes() for o in out}) > 200


def test_the_draws_follow_the_policys_probabilities() -> None:
    """Over many images each operation applies, per stage, as often as torchvision's policy says."""
    aa = AutoAugment("cifar10")
    n = 40_000
    draw = aa.draw(n, 32, 32, torch.Generator().manual_seed(1))
    policies = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)._policies
    for stage in range(2):
        for index, name in enumerate(OP_NAMES):
            p = sum(
                prob for sub in policies for s, (op, prob, _) in enumerate(sub) if s == stage and op == name
            )
            p /= len(policies)
            seen = (draw.op[stage] == index).float().mean().item()
            assert abs(seen - p) <= 4 * (p * (1 - p) / n) ** 0.5 + 1e-9, (stage, name, seen, p)
    rotations = draw.magnitude[draw.op == OP_NAMES.index("Rotate")]
    assert set(rotations.abs().round(decimals=3).tolist()) == {round(30 * 2 / 9, 3)}
    assert abs((rotations < 0).float().mean().item() - 0.5) < 0.05


def test_augmentation_is_reproducible_per_seed() -> None:
    x = images(64)

    def run(seed: int) -> torch.Tensor:
        aug = build_augmenter(STUDY, torch.Generator().manual_seed(seed))
        return torch.cat([aug(x), aug(x)])  # type: ignore[misc]

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_a_packs_draws_applied_at_once_equal_each_networks_own() -> None:
    """Concatenated per-network draws transform the concatenated batch as each network's alone would."""
    augs = [build_augmenter(STUDY, torch.Generator().manual_seed(s)) for s in (0, 1, 2)]
    x = images(3 * 16)
    draws = [a.draw(16, 32, 32) for a in augs]  # type: ignore[union-attr]
    together = augs[0].apply(x, AugmentDraw.cat(draws))  # type: ignore[union-attr]
    apart = torch.cat([a.apply(part, d) for a, part, d in zip(augs, x.split(16), draws, strict=True)])  # type: ignore[union-attr]
    assert torch.equal(together, apart)

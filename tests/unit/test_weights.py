"""Weight import: torchvision resnet18 and the study's checkpoints map onto ml.models.ResNet18 exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18

from ml.models import ResNet18
from ml.weights import (
    WeightsError,
    load_study_state_dict,
    load_torchvision_resnet18,
    read_weights_file,
    unwrap_state_dict,
)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and BatchNorm statistic non-default values, so a lost key changes outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            noise = torch.rand(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise)
            else:
                tensor.copy_((noise - 0.5) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def torchvision_model() -> torch.nn.Module:
    return _randomise(resnet18(weights=None))


def test_torchvision_resnet18_outputs_match(torchvision_model: torch.nn.Module) -> None:
    model = ResNet18(num_classes=1000, form="imagenet")
    skipped = load_torchvision_resnet18(model, torchvision_model.state_dict())
    assert skipped == []
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), torchvision_model(x), rtol=1e-4, atol=1e-5)


def test_torchvision_weights_seed_a_model_with_another_head(torchvision_model: torch.nn.Module) -> None:
    """ImageNet weights seed an AgeDB model: the 1000-class fc is skipped, the body matches exactly."""
    for head in ("linear", "mlp"):
        model = ResNet18(num_classes=10, form="imagenet", head=head)
        fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("linear.")}
        skipped = load_torchvision_resnet18(model, torchvision_model.state_dict())
        assert skipped == ["fc.bias", "fc.weight"]
        for key, value in fresh_head.items():
            assert torch.equal(model.state_dict()[key], value)
        body = torch.nn.Sequential(*list(torchvision_model.children())[:-1])
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            torch.testing.assert_close(model.eval().features(x), body(x).flatten(1), rtol=1e-4, atol=1e-5)


def test_torchvision_weights_need_the_imagenet_form(torchvision_model: torch.nn.Module) -> None:
    with pytest.raises(WeightsError, match="imagenet form"):
        load_torchvision_resnet18(ResNet18(form="cifar"), torchvision_model.state_dict())


def test_torchvision_weights_width_mismatch_names_first_key(torchvision_model: torch.nn.Module) -> None:
    with pytest.raises(WeightsError, match=r"'conv1\.weight' has shape \(64, 3, 7, 7\)"):
        load_torchvision_resnet18(ResNet18(form="imagenet", width=16), torchvision_model.state_dict())


def _study_checkpoint(num_classes: int = 10, width: int = 8) -> tuple[ResNet18, dict[str, object]]:
    """A CIFAR-form model and its weights as the study's Lightning module saved them (model. prefix)."""
    model = _randomise(ResNet18(num_classes=num_classes, width=width), seed=3)
    return model, {f"model.{k}": v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model"])
def test_study_checkpoint_round_trip(tmp_path: Path, wrapper: str | None) -> None:
    source, saved = _study_checkpoint()
    path = tmp_path / "resnet18.pt"
    torch.save(saved if wrapper is None else {wrapper: saved, "epoch": 99}, path)
    model = ResNet18(num_classes=10, width=8)
    load_study_state_dict(model, read_weights_file(path))
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(model.eval()(x), source(x))


def test_safetensors_round_trip(tmp_path: Path) -> None:
    source, saved = _study_checkpoint()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in saved.items()}, str(path))  # type: ignore[union-attr]
    model = ResNet18(num_classes=10, width=8)
    load_study_state_dict(model, read_weights_file(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_missing_num_batches_tracked_is_tolerated() -> None:
    source, saved = _study_checkpoint()
    trimmed = {k: v for k, v in saved.items() if not k.endswith("num_batches_tracked")}
    model = ResNet18(num_classes=10, width=8)
    load_study_state_dict(model, trimmed)  # type: ignore[arg-type]
    assert torch.equal(model.linear.weight, source.linear.weight)


def test_study_checkpoint_mismatches_name_the_key() -> None:
    _, saved = _study_checkpoint(num_classes=10)
    with pytest.raises(WeightsError, match=r"'linear\.weight' has shape \(10, 64\).*\(7, 64\)"):
        load_study_state_dict(ResNet18(num_classes=7, width=8), saved)
    with pytest.raises(WeightsError, match=r"'conv1\.weight' has shape \(8, 3, 3, 3\)"):
        load_study_state_dict(ResNet18(num_classes=10, width=16), saved)
    extra = {**saved, "model.layer5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"'layer5\.0\.conv1\.weight' does not exist"):
        load_study_state_dict(ResNet18(num_classes=10, width=8), extra)
    partial = {k: v for k, v in saved.items() if not k.startswith("model.layer3.")}
    with pytest.raises(WeightsError, match=r"model key 'layer3\.0\.conv1\.weight' is missing"):
        load_study_state_dict(ResNet18(num_classes=10, width=8), partial)


def test_unwrap_state_dict() -> None:
    w = torch.zeros(1)
    assert unwrap_state_dict({"module.model.a": w, "module.model.b": w}) == {"a": w, "b": w}
    assert unwrap_state_dict({"model.a": w, "b": w}) == {"model.a": w, "b": w}  # no shared prefix: kept
    with pytest.raises(WeightsError, match="holds no state dict"):
        unwrap_state_dict({"epoch": 3, "optimizer": {}})
    with pytest.raises(WeightsError, match="non-empty mapping"):
        unwrap_state_dict([w])


class _NotATensor:
    pass


def test_read_weights_file_refuses_unsafe_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        read_weights_file(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    with pytest.raises(WeightsError, match=r"cannot read weights file garbage\.pt"):
        read_weights_file(garbage)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"conv1.weight": torch.zeros(1), "extra": _NotATensor()}, unsafe)
    with pytest.raises(WeightsError, match="refused"):
        read_weights_file(unsafe)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\xff" * 16)
    with pytest.raises(WeightsError, match=r"cannot read weights file bad\.safetensors"):
        read_weights_file(bad_safetensors)

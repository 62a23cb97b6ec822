"""LETHE_DEVICE: "auto" follows what the job's process can see; anything else is taken as given."""

from __future__ import annotations

import pytest
import torch

from worker.runner import resolve_device, use_compile


@pytest.mark.parametrize(("visible", "expected"), [(True, "cuda"), (False, "cpu")])
def test_auto_picks_cuda_only_when_the_process_sees_a_gpu(monkeypatch, visible, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible)
    assert resolve_device("auto") == expected


def test_auto_on_this_machine_is_what_torch_sees():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("setting", ["cpu", "cuda", "cuda:1", "mps"])
def test_an_explicit_device_is_never_second_guessed(monkeypatch, setting):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(setting) == setting


@pytest.mark.parametrize(
    ("setting", "device", "expected"),
    [(True, "cuda", True), (True, "cuda:1", True), (True, "cpu", False), (False, "cuda", False)],
)
def test_torch_compile_applies_on_cuda_only(setting, device, expected):
    assert use_compile(setting, device) is expected

"""ResNet-18 in the study's CIFAR form and torchvision's ImageNet form, with a width multiplier.

Parameter names follow the study's code (conv1, bn1, layer1..layer4 with `shortcut`, `linear`), so
its checkpoints load directly; torchvision names (downsample, fc) are mapped in ml/weights.py.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ml.specs import ArchSpec


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18. form="cifar": 3x3 stride-1 stem, no max-pool; form="imagenet": 7x7 stride-2 stem + max-pool."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        form: str = "cifar",
        head: str = "linear",
    ) -> None:
        super().__init__()
        if form not in ("cifar", "imagenet"):
            raise ValueError(f"unknown ResNet-18 form {form!r}; valid: cifar, imagenet")
        self.form = form
        if form == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        planes = [width, width * 2, width * 4, width * 8]
        in_planes = width
        layers = []
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(in_planes, p, stride), BasicBlock(p, p, 1)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        feat = planes[-1]
        if head == "linear":
            self.linear: nn.Module = nn.Linear(feat, num_classes)
        elif head == "mlp":
            # The study's AgeDB regression head: a small MLP on the pooled features.
            self.linear = nn.Sequential(
                nn.Linear(feat, feat // 2), nn.ReLU(inplace=True), nn.Linear(feat // 2, num_classes)
            )
        else:
            raise ValueError(f"unknown head {head!r}; valid: linear, mlp")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.pool(out), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))

    def final_layer(self) -> nn.Linear:
        """The last linear layer (what prune_last_layer and activation_reset touch)."""
        head = self.linear
        if isinstance(head, nn.Sequential):
            head = head[-1]
        if not isinstance(head, nn.Linear):
            raise TypeError(f"the final layer is {type(head).__name__}, not Linear")
        return head


def build_model(arch: ArchSpec | dict[str, Any], num_classes: int, in_channels: int) -> ResNet18:
    """Build the network an ArchSpec describes, with fresh weights."""
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.model_validate(arch)
    return ResNet18(
        num_classes=num_classes, in_channels=in_channels, width=spec.width, form=spec.form, head=spec.head
    )

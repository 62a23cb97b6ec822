"""K networks of one architecture as one module: the K networks side by side in the channel axis.

Every convolution becomes a grouped convolution (groups = K) over the K networks' channels (on a CPU, a few
shapes in another form with the same outputs and gradients), every BatchNorm normalises the K * C channels
with its own batch statistics and running statistics per network (each channel belongs to one network, and
its batch is that network's batch), every Linear is a batched matrix product with K weight matrices. Network
k sees only its own channels, so the packed step computes exactly the K separate steps' outputs and
gradients. ml/ensemble.py trains it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class PackedLinear(nn.Module):
    """K Linear layers on [B, K * in] features -> [B, K * out]: network k's slice through its own matrix."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        out = torch.bmm(x.view(b, self.k, self.in_features).transpose(0, 1), self.weight.transpose(1, 2))
        if self.bias is not None:
            out = out + self.bias.unsqueeze(1)
        return out.transpose(0, 1).reshape(b, self.k * self.out_features)


ConvForm = Literal["grouped", "unfold", "window"]
"""How PackedConv2d computes on a CPU: oneDNN's grouped convolution; unfold (im2col) and one batched matrix
product over the networks; or, where the output is one pixel, the weights' live window as a batched product."""

THIN_GROUP = 8
"""Fewer input channels per network than this, and oneDNN's grouped convolution on NCHW tensors falls back to
its im2col + GEMM reference kernel (x64:gemm:jit), slower than unfold + one batched product (the stem)."""


def conv_form(x_shape: Sequence[int], conv: nn.Conv2d, k: int) -> ConvForm:
    """The CPU form PackedConv2d uses for inputs of x_shape: per-layer measurements in docs/ensemble.md
    (benchmarks/bench_packed_conv.py), digits at width 8. Any form gives the same outputs and gradients."""
    if conv.groups != k or isinstance(conv.padding, str) or conv.dilation != (1, 1) or len(x_shape) != 4:
        return "grouped"
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    h, w = x_shape[2], x_shape[3]
    if (h + 2 * ph - kh) // sh == 0 and (w + 2 * pw - kw) // sw == 0 and ph < kh and pw < kw:
        return "window"  # one output pixel: only the taps that see the image count
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
        return "unfold"
    if conv.in_channels // k < THIN_GROUP:
        return "unfold"
    return "grouped"


def packed_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    k: int,
    stride: tuple[int, int],
    padding: tuple[int, int],
    form: ConvForm,
) -> torch.Tensor:
    """F.conv2d(x, weight, bias, stride, padding, groups=k) (dilation 1, one group per network) in `form`.

    x is [B, K * C, H, W], weight [K * C_out, C, kh, kw] as the grouped convolution stores it; the result is
    NCHW [B, K * C_out, H_out, W_out]. Autograd differentiates every form exactly (sums in another order).
    """
    if form == "grouped":
        return F.conv2d(x, weight, bias, stride, padding, 1, k)
    b, _, h, w = x.shape
    kco, c, kh, kw = weight.shape
    co = kco // k
    (sh, sw), (ph, pw) = stride, padding
    if form == "window":
        # The one output pixel sees input rows i - ph for taps i in [ph, ph + h) within the kernel (and
        # columns likewise): slice both to those and the convolution is a product over (C, rows, columns).
        i0, i1, j0, j1 = max(0, ph), min(kh, ph + h), max(0, pw), min(kw, pw + w)
        xs = x[:, :, i0 - ph : i1 - ph, j0 - pw : j1 - pw]
        ws = weight[:, :, i0:i1, j0:j1]
        n = c * (i1 - i0) * (j1 - j0)
        out = torch.bmm(xs.reshape(b, k, n).transpose(0, 1), ws.reshape(k, co, n).transpose(1, 2))
        out = out.transpose(0, 1).reshape(b, kco, 1, 1)
    else:
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # [B, K * C * kh * kw, L]
        n = c * kh * kw
        cols = cols.view(b, k, n, ho * wo).permute(1, 2, 0, 3).reshape(k, n, b * ho * wo)
        out = torch.bmm(weight.view(k, co, n), cols)  # [K, C_out, B * L]
        out = out.view(kco, b, ho, wo).transpose(0, 1).contiguous()
    if bias is not None:
        out = out + bias.view(1, kco, 1, 1)
    return out


class PackedConv2d(nn.Conv2d):
    """K Conv2d layers side by side in the channel axis: a grouped convolution (groups = K) over the K networks'
    channels, weights stored as nn.Conv2d stores them ([K * C_out, C_in, kh, kw], network k's in block k).

    On CUDA it is the grouped convolution. On a CPU, the shapes oneDNN's grouped kernels handle worst (a
    one-pixel output, 1x1 kernels, fewer than THIN_GROUP input channels per network) are computed as batched
    matrix products over the networks instead (conv_form, packed_conv2d): the same outputs and gradients.
    """

    def __init__(self, conv: nn.Conv2d, k: int) -> None:
        if conv.padding_mode != "zeros":
            raise TypeError(f"cannot pack a Conv2d with padding_mode={conv.padding_mode!r}")
        super().__init__(
            conv.in_channels * k,
            conv.out_channels * k,
            conv.kernel_size,  # type: ignore[arg-type]
            conv.stride,  # type: ignore[arg-type]
            conv.padding,  # type: ignore[arg-type]
            conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups * k,
            bias=conv.bias is not None,
        )
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        form = conv_form(x.shape, self, self.k)
        if form == "grouped":
            return super().forward(x)
        return packed_conv2d(
            x,
            self.weight,
            self.bias,
            self.k,
            self.stride,
            self.padding,
            form,  # type: ignore[arg-type]
        )


SMALL_MAP = 4
"""Largest map (H * W pixels, above one) PackedBatchNorm2d normalises as rows of channels on a CPU."""


class PackedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the K networks' channels (each channel belongs to one network, its batch is that
    network's batch). On a CPU, maps of 2 to SMALL_MAP pixels are normalised as [B * H * W, C, 1, 1]: the same
    statistics over the same values (running variance's count too), but PyTorch's NCHW kernel loops over each
    channel's runs of H * W values (4 at 2x2, 3.8x slower forward + backward than the row form at 256
    channels, batch 64; docs/ensemble.md), while a 1x1 map takes its vectorised channels-last path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not 1 < x.shape[2] * x.shape[3] <= SMALL_MAP:
            return super().forward(x)
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
        return super().forward(rows).view(b, h, w, c).permute(0, 3, 1, 2).contiguous()


def _packed_layer(module: nn.Module, k: int) -> nn.Module | None:
    """The K-wide counterpart of a layer with weights; None for layers that act per channel or elementwise."""
    if isinstance(module, nn.Conv2d):
        return PackedConv2d(module, k)
    if isinstance(module, nn.BatchNorm2d):
        return PackedBatchNorm2d(
            module.num_features * k, module.eps, module.momentum, module.affine, module.track_running_stats
        )
    if isinstance(module, nn.Linear):
        return PackedLinear(k, module.in_features, module.out_features, module.bias is not None)
    if (
        next(module.parameters(recurse=False), None) is not None
        or next(module.buffers(recurse=False), None) is not None
    ):
        raise TypeError(
            f"cannot pack a {type(module).__name__}: only Conv2d, BatchNorm2d and Linear carry weights"
        )
    return None


def _widen(module: nn.Module, k: int) -> None:
    """Replace, in place, every weighted layer below `module` by its K-wide counterpart."""
    for name, child in module.named_children():
        wide = _packed_layer(child, k)
        if wide is None:
            _widen(child, k)
        else:
            setattr(module, name, wide)


class PackedNet(nn.Module):
    """K networks of one architecture as one module; inputs and outputs carry a network axis.

    forward takes [K, B, C, H, W] (network k's batch at index k) or [B, C, H, W] (one batch for all) and
    returns [K, B, outputs].
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("a pack needs at least one model")
        kinds = {type(m) for m in models}
        shapes = {tuple((n, tuple(t.shape)) for n, t in m.state_dict().items()) for m in models}
        if len(kinds) != 1 or len(shapes) != 1:
            raise ValueError("a pack's models must share one architecture (same class, same tensor shapes)")
        self.k = len(models)
        self.shapes = {name: t.shape for name, t in models[0].state_dict().items()}
        self.net = copy.deepcopy(models[0]).to("cpu")
        _widen(self.net, self.k)
        self.load_models(models)

    def load_models(self, models: Sequence[nn.Module]) -> None:
        """Copy the K models' weights and statistics into the pack (model k into slot k)."""
        plain = [m.state_dict() for m in models]
        packed = self.net.state_dict()
        with torch.no_grad():
            for name, target in packed.items():
                parts = [sd[name].to(target.device) for sd in plain]
                if target.shape == parts[0].shape:  # num_batches_tracked: one count, the same for all
                    target.copy_(parts[0])
                else:
                    target.copy_(torch.stack(parts).reshape(target.shape))

    def stack(self, name: str, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The packed form of one tensor of the state dict from its K per-network values (network k's in slot k)."""
        return torch.stack(list(parts)).reshape(self.net.state_dict()[name].shape)

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """K plain state dicts (contiguous copies), in the format the packed models had."""
        packed = self.net.state_dict()
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(self.k)]
        for name, tensor in packed.items():
            t = tensor.detach()
            if t.dim() == 0:
                for sd in out:
                    sd[name] = t.clone()
                continue
            per = t.reshape(self.k, *self.shapes[name])
            for i, sd in enumerate(out):
                sd[name] = per[i].clone().contiguous()
        return out

    def store_into(self, models: Sequence[nn.Module]) -> None:
        """Write network k's weights and statistics back into models[k] (which keeps its own device)."""
        for model, sd in zip(models, self.state_dicts(), strict=True):
            model.load_state_dict(sd)

    @staticmethod
    def side_by_side(x: torch.Tensor) -> torch.Tensor:
        """[K, B, C, H, W] -> [B, K * C, H, W]: network k's images in channel block k."""
        k, b, c, h, w = x.shape
        return x.transpose(0, 1).reshape(b, k * c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(self.k, *x.shape)
        if x.shape[0] != self.k:
            raise ValueError(f"expected {self.k} batches (one per network), got {x.shape[0]}")
        out = self.net(self.side_by_side(x))
        return out.view(out.shape[0], self.k, -1).transpose(0, 1)

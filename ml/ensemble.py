"""K networks of one architecture trained together in one process: one step updates all of them.

The K networks sit side by side in the channel axis of one wider network: every convolution becomes a
grouped convolution (groups = K) over the K networks' channels, every BatchNorm normalises the K * C channels
with its own batch statistics and running statistics per network (each channel belongs to one network, and
its batch is that network's batch), every Linear is a batched matrix product with K weight matrices. Network
k sees only its own channels, so the packed step computes exactly the K separate steps' outputs and
gradients; SGD and Adam act elementwise, so one optimiser over the packed tensors is K separate optimisers.

Each network keeps what a separate run has: its own initial weights (the models it is packed from), its own
training ids, data order and augmentation draws (a generator per network, seeded as fit seeds its own, so
network k draws the batches fit(seed=seeds[k]) would), and its own BatchNorm statistics. The trained weights
are written back into the K plain models, whose state dicts are exactly what fit produces.

Why grouped convolutions rather than torch.func's vmap over functional_call: docs/ensemble.md has the
measurement (digits, width 8, one CPU thread).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.augment import AugmentDraw, Normalizer, build_augmenter
from ml.data.base import ArrayDataset
from ml.errors import Cancelled, Diverged
from ml.specs import AugmentSpec, Recipe
from ml.trainer import (
    REPORT_SECONDS,
    Backend,
    Optimizer,
    Progress,
    ProgressEvent,
    Schedule,
    StopFlag,
    TrainStats,
    _brief,
    _compiled,
    _targets,
    channels_last_helps,
    compile_default,
    compile_mode,
    derive_seed,
    make_optimizer,
    make_scheduler,
    resolve_device,
    seeded,
    select_ids,
    to_device,
)

log = logging.getLogger(__name__)


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


CPU_PACK_SIZE = 8
"""Networks per pack on a CPU: packing gained up to K = 8 and no more on a 2-core machine (docs/ensemble.md)."""

CUDA_PACK_CAP = 32
"""The most networks one pack holds on a GPU however much memory is free (benchmarks/gpu_check.py's ensemble
section measures K up to 32)."""

MEMORY_HEADROOM = 0.8
"""Share of the device's free memory a pack may plan to use (the allocator's fragmentation and cuDNN's
workspaces take the rest)."""


def packs_that_fit(free_bytes: int, per_model_bytes: int, cap: int = CUDA_PACK_CAP) -> int:
    """How many networks of per_model_bytes each fit in MEMORY_HEADROOM of free_bytes: at least 1, at most cap."""
    return max(1, min(cap, int(free_bytes * MEMORY_HEADROOM) // max(per_model_bytes, 1)))


def device_pack_size(
    model: nn.Module, input_shape: Sequence[int], batch_size: int, device: str | torch.device
) -> int:
    """How many networks like `model` one pack trains together on `device`.

    On a CPU, CPU_PACK_SIZE. On CUDA, as many as the free memory holds: one training step of one network
    (batch_size inputs of input_shape, bf16 autocast as fit runs it there, SGD with momentum) is measured, its
    weights, gradients, optimiser state and activations are one network's share, and a pack of K needs K of
    them (its tensors are the K networks' side by side). A pack that still runs out of memory is split in
    halves by its callers.
    """
    dev = resolve_device(device)
    if dev.type != "cuda":
        return CPU_PACK_SIZE
    probe = copy.deepcopy(model).to(dev).train()
    weights = sum(t.numel() * t.element_size() for t in probe.state_dict().values())
    opt = torch.optim.SGD(probe.parameters(), lr=0.0, momentum=0.9)
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = probe(torch.zeros(batch_size, *input_shape, device=dev))
    out.float().sum().backward()
    opt.step()
    torch.cuda.synchronize(dev)
    per_model = torch.cuda.max_memory_allocated(dev) - base + weights
    del probe, opt, out
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(dev)
    return packs_that_fit(free, per_model)


def _pack_rows(
    dataset: ArrayDataset,
    ids: Sequence[np.ndarray | None],
    labels: Sequence[np.ndarray | None] | None,
    k: int,
) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Each network's validated rows and targets; all must have the same count, so every step is one shape."""
    if len(ids) != k:
        raise ValueError(f"expected {k} id sets (one per model), got {len(ids)}")
    lab = [None] * k if labels is None else list(labels)
    if len(lab) != k:
        raise ValueError(f"expected {k} label sets (one per model), got {len(lab)}")
    rows = [select_ids(dataset, i) for i in ids]
    sizes = sorted({len(r) for r in rows})
    if len(sizes) > 1:
        raise ValueError(f"a pack's id sets must have the same size, got sizes {sizes}; pack them apart")
    return rows, [_targets(dataset, r, y) for r, y in zip(rows, lab, strict=True)]


def fit_packed(
    models: Sequence[nn.Module],
    dataset: ArrayDataset,
    ids: Sequence[np.ndarray | None],
    *,
    seeds: Sequence[int],
    epochs: int,
    lr: float,
    batch_size: int = 128,
    optimizer: Optimizer = "sgd",
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    schedule: Schedule = "none",
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    augment: AugmentSpec | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    labels: Sequence[np.ndarray | None] | None = None,
    stage: str = "train",
    report_every: int | None = None,
    report_seconds: float = REPORT_SECONDS,
    fast: bool | None = None,
    compile_model: bool | None = None,
    compile_backend: Backend | None = None,
    prepare: Callable[[PackedNet], AbstractContextManager[object]] | None = None,
) -> list[TrainStats]:
    """Train models[k] in place on rows ids[k] with seed seeds[k], all K in one loop; fit's settings.

    `labels[k]` overrides network k's targets (one per id). `prepare(pack)` is entered around the loop once the
    pack is built: where a method adds its hooks (gradient rewrites act elementwise, so one hook on a packed
    tensor is the hook on each network's slice). Progress is reported as fit reports it (each epoch's end, and every report_seconds or report_every
    steps between); events carry the pack's mean loss and accuracy; a non-finite loss in any network raises
    Diverged naming it. The returned TrainStats (one per model) share the pack's wall time.
    """
    k = len(models)
    if k == 0:
        raise ValueError("a pack needs at least one model")
    if len(seeds) != k:
        raise ValueError(f"expected {k} seeds (one per model), got {len(seeds)}")
    rows, targets = _pack_rows(dataset, ids, labels, k)
    n = len(rows[0])
    dev = resolve_device(device)
    if n == 0 or epochs <= 0:
        return [TrainStats(0, 0, 0, 0.0, float("nan"), None) for _ in models]
    cuda = dev.type == "cuda"
    fast = cuda if fast is None else fast
    default = compile_default()
    compile_model = default.enabled if compile_model is None else compile_model
    backend = default.backend if compile_backend is None else compile_backend
    regression = dataset.task == "regression"
    x = to_device(torch.from_numpy(np.ascontiguousarray(dataset.train_x)), dev)
    # Row r of network k's data is x[index[k, r]]; the targets are stacked the same way.
    index = to_device(torch.from_numpy(np.stack(rows)), dev)
    y = to_device(torch.stack(targets), dev)
    steps_per_epoch = math.ceil(n / batch_size)
    total = steps_per_epoch * epochs
    pack = PackedNet(models).to(dev)
    layout = fast and channels_last_helps(dataset)
    if layout:
        pack.to(memory_format=torch.channels_last)
    wide = pack.net
    net = _compiled(wide, backend, compile_mode(backend, dev), stage) if compile_model else wide
    opt = make_optimizer(pack, optimizer, lr, momentum, nesterov, weight_decay)
    sched = make_scheduler(opt, schedule, lr, steps_per_epoch, total, milestones, gamma)
    generators = []
    for seed in seeds:
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        generators.append(g)
    augmenters = [build_augmenter(augment, g) for g in generators]
    normalise = Normalizer(dataset.mean, dataset.std, dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if fast else nullcontext()
    cudnn = torch.backends.cudnn.flags(enabled=True, benchmark=True) if cuda else nullcontext()
    arange_k = torch.arange(k, device=dev).view(k, 1)
    started = time.perf_counter()
    step = samples = 0
    last_report = time.monotonic()
    epoch = 0
    epoch_loss = torch.full((k,), float("nan"))
    epoch_acc: torch.Tensor | None = None
    try:
        hooks = nullcontext() if prepare is None else prepare(pack)
        with seeded(derive_seed(seeds[0], 1, k), dev), cudnn, hooks:
            for epoch in range(epochs):
                pack.train()
                perm = torch.stack([torch.randperm(n, device=dev, generator=g) for g in generators])
                loss_sum = torch.zeros(k, device=dev)
                correct = torch.zeros(k, device=dev, dtype=torch.long)
                seen = 0
                for i in range(steps_per_epoch):
                    if should_stop is not None and should_stop():
                        raise Cancelled(
                            f"{stage}: stopped at epoch {epoch + 1}/{epochs}, step {step}/{total}"
                        )
                    pos = perm[:, i * batch_size : (i + 1) * batch_size]
                    if pos.shape[1] == 1:
                        pos = pos.repeat(1, 2)  # batch norm cannot train on one sample (see fit)
                    b = pos.shape[1]
                    xb = x[index.gather(1, pos)]  # [K, b, C, H, W]
                    yb = y[arange_k, pos]  # [K, b]
                    flat = xb.reshape(k * b, *xb.shape[2:])
                    if augmenters[0] is not None:
                        # Each network draws from its own generators; the whole pack's batch is transformed at once.
                        draws = AugmentDraw.cat([a.draw(b, *flat.shape[2:]) for a in augmenters])  # type: ignore[union-attr]
                        flat = augmenters[0].apply(flat, draws)
                    inputs = normalise(flat).view(xb.shape)
                    inputs = pack.side_by_side(inputs)
                    if layout:  # channels_last weights take channels_last inputs, as in fit
                        inputs = inputs.contiguous(memory_format=torch.channels_last)
                    # Not on a CPU's NCHW weights: oneDNN's convolution backward corrupted the heap on
                    # channels_last inputs there (3 channels, 32x32; tests/unit/test_ensemble.py).
                    opt.zero_grad(set_to_none=True)
                    targets = yb.transpose(0, 1)
                    try:
                        out, per_net = _step(net, inputs, targets, autocast, regression)
                    except Exception as exc:
                        if net is wide:
                            raise
                        log.warning("%s: torch.compile failed, training eagerly: %s", stage, _brief(exc))
                        net = wide
                        opt.zero_grad(set_to_none=True)
                        out, per_net = _step(net, inputs, targets, autocast, regression)
                    opt.step()
                    sched.step()
                    loss_sum += per_net.detach() * b
                    if not regression:
                        correct += (out.detach().argmax(2) == targets).sum(0)
                    seen += b
                    step += 1
                    last = i == steps_per_epoch - 1
                    due = progress is not None and (
                        step % report_every == 0
                        if report_every is not None
                        else time.monotonic() - last_report >= report_seconds
                    )
                    if last or due:
                        last_report = time.monotonic()
                        epoch_loss = (loss_sum / seen).float().cpu()
                        epoch_acc = None if regression else (correct.float() / seen).cpu()
                        bad = [j for j, v in enumerate(epoch_loss.tolist()) if not math.isfinite(v)]
                        if bad:
                            raise Diverged(
                                f"{stage}: loss became {epoch_loss[bad[0]].item()} in model {bad[0]} of the"
                                f" pack at epoch {epoch + 1}"
                            )
                        if progress is not None:
                            progress(
                                ProgressEvent(
                                    step / total,
                                    epoch + 1,
                                    epochs,
                                    step,
                                    total,
                                    float(epoch_loss.mean()),
                                    None if epoch_acc is None else float(epoch_acc.mean()),
                                    stage,
                                )
                            )
                samples += seen
    finally:
        if layout:
            pack.to(memory_format=torch.contiguous_format)
    for model in models:
        model.to(dev)
    pack.store_into(models)
    seconds = time.perf_counter() - started
    return [
        TrainStats(
            epoch + 1,
            step,
            samples,
            seconds,
            float(epoch_loss[j]),
            None if epoch_acc is None else float(epoch_acc[j]),
            net is not wide,
        )
        for j in range(k)
    ]


def _step(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    autocast: AbstractContextManager[object],
    regression: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs [B, K, outputs] and each network's mean loss [K]; their sum's gradients land in the parameters.

    Network k's loss depends only on network k's weights, so the sum's gradient for them is its own.
    """
    b, k = targets.shape
    with autocast:
        out = net(inputs).view(b, k, -1)
        if regression:
            losses = F.mse_loss(out.float()[..., 0], targets, reduction="none").mean(0)
        else:
            losses = (
                F.cross_entropy(out.reshape(b * k, -1), targets.reshape(-1), reduction="none")
                .view(b, k)
                .mean(0)
            )
    losses.sum().backward()
    return out, losses


def train_packed(
    models: Sequence[nn.Module],
    dataset: ArrayDataset,
    ids: Sequence[np.ndarray | None],
    recipe: Recipe,
    *,
    seeds: Sequence[int],
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopFlag | None = None,
    stage: str = "train",
    compile_model: bool | None = None,
) -> list[TrainStats]:
    """train() for a pack: models[k] trains on ids[k] with seeds[k] and the full recipe."""
    return fit_packed(
        models,
        dataset,
        ids,
        seeds=seeds,
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        optimizer=recipe.optimizer,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
        schedule=recipe.schedule,
        milestones=recipe.milestones,
        gamma=recipe.gamma,
        augment=recipe.augment,
        device=device,
        progress=progress,
        should_stop=should_stop,
        stage=stage,
        compile_model=compile_model,
    )

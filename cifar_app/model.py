"""The coursework's dynamic-convolution network, readable top to bottom.

A block takes X and
  1. predicts K mixing weights a = softmax(Linear(AdaptiveAvgPool(X)) / T);
  2. mixes K 3x3 convolutions of X: O = sum_k a_k Conv_k(X);
  3. adds a shortcut from X (a 1x1 conv + BatchNorm where the channel counts differ, X itself otherwise);
  4. applies BatchNorm (to O), LeakyReLU, and MaxPool at the end of each stage.
The backbone has N blocks in up to four stages (11 = 2+3+3+3) whose width doubles at each pooling; the
classifier is AdaptiveAvgPool2d -> Linear (the loss takes logits; softmax where probabilities are shown).

O = sum_k a_k Conv_k(X) is one convolution with the per-sample kernel sum_k a_k W_k (CondConv, Yang et al.
2019; Dynamic Convolution, Chen et al. 2020). Three exact implementations compute it:
  loop       K separate convolutions, weighted and summed (the coursework's way; K launches per block);
  batched    one convolution with K*C_out outputs, then the weighted sum (one large launch, K times the MACs);
  persample  per-sample kernels sum_k a_k W_k and one grouped convolution with groups=batch (1x the MACs).
`python -m cifar_app.bench` measures them; `auto` (the default) picks per block by device and resolution,
from those measurements (see `auto_impl`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cifar_app.config import TrainConfig

IMPLEMENTATIONS = ("loop", "batched", "persample")
# On the CPU, forward+backward of one block (python -m cifar_app.bench, section 2b) is 2-4x faster with
# per-sample kernels at 16x16 and above (few channels, many pixels: the kernels are small, the K outputs
# large), and 1.2-4x slower below (many channels, few pixels: the per-sample kernels outweigh the pixels).
CPU_PERSAMPLE_MIN_PIXELS = 16 * 16


def auto_impl(device_type: str, pixels: int) -> str:
    """The measured-fastest exact implementation for a block on `device_type` at `pixels` = H*W.

    CUDA (H200): one convolution with K*C_out outputs at every resolution; cuDNN's grouped convolution
    with groups=batch trains slower. CPU: per-sample kernels at high resolution, batched below.
    """
    if device_type == "cpu" and pixels >= CPU_PERSAMPLE_MIN_PIXELS:
        return "persample"
    return "batched"
NEGATIVE_SLOPE = 0.1


def dynamic_conv(x: torch.Tensor, weight: torch.Tensor, a: torch.Tensor, impl: str) -> torch.Tensor:
    """sum_k a[:, k] * conv2d(x, W_k) with 'same' padding, by the named implementation.

    x: (B, C_in, H, W); weight: (K * C_out, C_in, s, s), the K kernels W_k stacked along the outputs
    (a 4-D tensor, so channels_last and the usual fan-in rules apply to it); a: (B, K).
    """
    b, k = a.shape
    c_out, c_in, s = weight.shape[0] // k, weight.shape[1], weight.shape[2]
    pad = s // 2
    if impl == "loop":
        out = None
        for i in range(k):
            y = F.conv2d(x, weight[i * c_out : (i + 1) * c_out], padding=pad)
            term = a[:, i, None, None, None].to(y.dtype) * y
            out = term if out is None else out + term
        return out
    if impl == "batched":
        y = F.conv2d(x, weight, padding=pad)
        h, w = y.shape[2:]
        return (y.view(b, k, c_out, h, w) * a.view(b, k, 1, 1, 1).to(y.dtype)).sum(1)
    if impl == "persample":
        h, w = x.shape[2:]
        kernels = torch.einsum("bk,koixy->boixy", a.to(weight.dtype), weight.view(k, c_out, c_in, s, s))
        y = F.conv2d(x.reshape(1, b * c_in, h, w), kernels.reshape(b * c_out, c_in, s, s), padding=pad, groups=b)
        return y.view(b, c_out, h, w)
    raise ValueError(f"unknown dynamic-conv implementation {impl!r}; use one of {', '.join(IMPLEMENTATIONS)}")


class DynamicConv2d(nn.Module):
    """K kernels mixed per sample by weights predicted from the pooled input."""

    def __init__(self, c_in: int, c_out: int, k: int, size: int = 3, impl: str = "auto"):
        super().__init__()
        self.k, self.c_in, self.c_out, self.size, self.impl = k, c_in, c_out, size, impl
        self.weight = nn.Parameter(torch.empty(k * c_out, c_in, size, size))
        self.attention = nn.Linear(c_in, k)
        # a tensor, not a float: changing it each epoch must not recompile a torch.compile'd model
        self.register_buffer("temperature", torch.ones(()), persistent=False)

    def mixing_weights(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.attention(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return torch.softmax(logits.float() / self.temperature, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.mixing_weights(x)
        impl = auto_impl(x.device.type, x.shape[2] * x.shape[3]) if self.impl == "auto" else self.impl
        return dynamic_conv(x, self.weight, a, impl), a


class DynamicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, pool: bool, impl: str = "auto"):
        super().__init__()
        self.conv = DynamicConv2d(c_in, c_out, k, impl=impl)
        self.bn = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)) if c_in != c_out else nn.Identity()
        )
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o, a = self.conv(x)
        return self.pool(self.act(self.bn(o) + self.shortcut(x))), a


def stage_plan(blocks: int, width: int) -> list[tuple[int, bool]]:
    """(channels, pool after) for each block: up to four stages, later stages longer, width doubling per stage.

    11 blocks at width 32: 32 32 | 64 64 64 | 128 128 128 | 256 256 256, pooling after blocks 2, 5 and 8.
    """
    stages = min(4, blocks)
    sizes = [blocks // stages] * stages
    for i in range(blocks % stages):
        sizes[stages - 1 - i] += 1
    plan = []
    for s, size in enumerate(sizes):
        for j in range(size):
            plan.append((width * 2**s, j == size - 1 and s < stages - 1))
    return plan


class DynamicConvNet(nn.Module):
    def __init__(
        self, blocks: int = 11, k: int = 4, width: int = 32, impl: str = "auto", num_classes: int = 10,
        zero_init_bn: bool = False,
    ):
        super().__init__()
        layers, c_in = [], 3
        for c_out, pool in stage_plan(blocks, width):
            layers.append(DynamicBlock(c_in, c_out, k, pool, impl))
            c_in = c_out
        self.blocks = nn.ModuleList(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        init_weights(self, zero_init_bn)  # never left uninitialised; build_model re-draws from the config's seed

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and each block's mixing weights a (B, K): the architecture's own view of an image."""
        attention = []
        for block in self.blocks:
            x, a = block(x)
            attention.append(a)
        return self.fc(self.pool(x).flatten(1)), attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(x)[0]

    def set_impl(self, impl: str) -> None:
        for module in self.modules():
            if isinstance(module, DynamicConv2d):
                module.impl = impl

    def block_impls(self, device_type: str) -> list[str]:
        """The implementation each block runs on `device_type` for 32x32 inputs."""
        side, chosen = 32, []
        for block in self.blocks:
            impl = block.conv.impl
            chosen.append(auto_impl(device_type, side * side) if impl == "auto" else impl)
            if isinstance(block.pool, nn.MaxPool2d):
                side //= 2
        return chosen

    def temperature(self) -> float:
        """The attention softmax temperature the blocks use now (1 once any annealing has ended)."""
        return float(self.blocks[0].conv.temperature)

    def set_temperature(self, value: float) -> None:
        for module in self.modules():
            if isinstance(module, DynamicConv2d):
                module.temperature.fill_(value)


def init_weights(model: nn.Module, zero_init_bn: bool = False, seed: int | None = None) -> None:
    """kaiming_normal_ for every convolution kernel and linear layer, zero biases; optionally zero the
    BatchNorm scale after each dynamic convolution so every block starts as its shortcut.

    With `seed`, the draws come from a generator of their own, so the initial weights depend on the seed
    alone, not on what else (another thread, a speed probe) used the global random state meanwhile."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for module in model.modules():
        if isinstance(module, (DynamicConv2d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, a=NEGATIVE_SLOPE, nonlinearity="leaky_relu", generator=generator)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        if zero_init_bn and isinstance(module, DynamicBlock):
            nn.init.zeros_(module.bn.weight)


def build_model(config: TrainConfig, device: torch.device | str = "cpu") -> DynamicConvNet:
    """The network a config describes, initialised from the config's seed, on `device`."""
    model = DynamicConvNet(config.blocks, config.k, config.width, config.impl)
    init_weights(model, config.zero_init_bn, seed=config.seed)
    return model.to(device)


@dataclass
class ModelSummary:
    params: int
    macs: int  # multiply-adds per 32x32 image, counting the K convolutions of each block as K convolutions
    blocks: list[dict]  # per block: block, in, out, resolution, pool, params, macs

    def describe(self) -> str:
        return f"{self.params / 1e6:.2f} M parameters, {self.macs / 1e6:.1f} M multiply-adds per image"


def summarize_shape(blocks: int, k: int, width: int, num_classes: int = 10) -> ModelSummary:
    """Parameters and multiply-adds per image of the network with these three numbers, counted from the
    architecture alone (no model is built: a page can ask about a 2-billion-parameter slider setting)."""
    rows, c_in, side = [], 3, 32
    for c_out, pool in stage_plan(blocks, width):
        pixels = side * side
        params = k * c_out * c_in * 9 + (c_in * k + k) + 2 * c_out  # kernels, attention Linear, BatchNorm
        macs = k * c_out * c_in * 9 * pixels + c_in * k + k * c_out * pixels  # K convolutions, attention, mixing
        if c_in != c_out:  # the 1x1 conv + BatchNorm shortcut
            params += c_in * c_out + 2 * c_out
            macs += c_in * c_out * pixels
        rows.append({"block": len(rows) + 1, "in": c_in, "out": c_out, "resolution": f"{side}x{side}",
                     "pool": pool, "params": params, "macs": macs})
        c_in, side = c_out, side // 2 if pool else side
    params = sum(r["params"] for r in rows) + c_in * num_classes + num_classes
    macs = sum(r["macs"] for r in rows) + c_in * num_classes
    return ModelSummary(params, macs, rows)


def summarize(model: DynamicConvNet) -> ModelSummary:
    """The summary of a built model (its parameter count is checked against the architecture's)."""
    first = model.blocks[0].conv
    summary = summarize_shape(len(model.blocks), first.k, first.c_out, model.fc.out_features)
    assert summary.params == sum(p.numel() for p in model.parameters()), "summary out of step with the model"
    return summary

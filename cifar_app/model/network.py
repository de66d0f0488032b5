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

import torch
import torch.nn.functional as F
from torch import nn

from cifar_app.config import TrainConfig
from cifar_app.shape import ModelSummary, stage_plan, summarize_shape

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
        # a tensor, not a float: changing it each epoch must not recompile a torch.compile'd model; part of the
        # state_dict, because a model saved mid-anneal predicts at its temperature, not at 1
        self.register_buffer("temperature", torch.ones(()))

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

    def load_weights(self, state: dict[str, torch.Tensor], temperature: float = 1.0) -> None:
        """load_state_dict, also for checkpoints saved before the temperature was part of the state: their
        blocks get `temperature` (which such checkpoints stored beside the weights)."""
        self.load_state_dict(with_temperature(state, temperature, len(self.blocks)))


def with_temperature(state: dict[str, torch.Tensor], temperature: float, blocks: int) -> dict[str, torch.Tensor]:
    """`state` with each block's attention temperature, added where an older checkpoint lacks it."""
    missing = {f"blocks.{i}.conv.temperature" for i in range(blocks)} - set(state)
    return {**state, **{key: torch.tensor(float(temperature)) for key in missing}}


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
    """The network a config describes, initialised from the config's seed, on `device`. A config that
    validation refuses (a network past the parameter budget, say) is refused here too, before allocating."""
    config.check()
    model = DynamicConvNet(config.blocks, config.k, config.width, config.impl)
    init_weights(model, config.zero_init_bn, seed=config.seed)
    return model.to(device)


def summarize(model: DynamicConvNet) -> ModelSummary:
    """The summary of a built model (its parameter count is checked against the architecture's)."""
    first = model.blocks[0].conv
    summary = summarize_shape(len(model.blocks), first.k, first.c_out, model.fc.out_features)
    assert summary.params == sum(p.numel() for p in model.parameters()), "summary out of step with the model"
    return summary

"""The network's shape from its three numbers (blocks, K, width), without torch.

Parameters, multiply-adds and the memory a training step needs are counted from the architecture alone, so
the config's validation, the dashboard's model summary and the speed probe can ask about any slider setting
(a 6-billion-parameter one included) before anything is allocated. model/network.py builds what `stage_plan` says.
"""

from __future__ import annotations

from dataclasses import dataclass

BYTES_PER_FLOAT = 4
# Adam keeps two moments per weight; with the weight and its gradient, four floats per parameter.
FLOATS_PER_PARAM = 4


@dataclass
class ModelSummary:
    params: int
    macs: int  # multiply-adds per 32x32 image, counting the K convolutions of each block as K convolutions
    blocks: list[dict]  # per block: block, in, out, resolution, pool, params, macs

    def describe(self) -> str:
        return f"{self.params / 1e6:.2f} M parameters, {self.macs / 1e6:.1f} M multiply-adds per image"


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


def block_shapes(blocks: int, width: int) -> list[tuple[int, int, int, bool]]:
    """(channels in, channels out, side of the input, pool after) of each block for a 32x32 image."""
    shapes, c_in, side = [], 3, 32
    for c_out, pool in stage_plan(blocks, width):
        shapes.append((c_in, c_out, side, pool))
        c_in, side = c_out, side // 2 if pool else side
    return shapes


def summarize_shape(blocks: int, k: int, width: int, num_classes: int = 10) -> ModelSummary:
    """Parameters and multiply-adds per image of the network with these three numbers."""
    rows = []
    for c_in, c_out, side, pool in block_shapes(blocks, width):
        pixels = side * side
        params = k * c_out * c_in * 9 + (c_in * k + k) + 2 * c_out  # kernels, attention Linear, BatchNorm
        macs = k * c_out * c_in * 9 * pixels + c_in * k + k * c_out * pixels  # K convolutions, attention, mixing
        if c_in != c_out:  # the 1x1 conv + BatchNorm shortcut
            params += c_in * c_out + 2 * c_out
            macs += c_in * c_out * pixels
        rows.append({"block": len(rows) + 1, "in": c_in, "out": c_out, "resolution": f"{side}x{side}",
                     "pool": pool, "params": params, "macs": macs})
    last = stage_plan(blocks, width)[-1][0]
    params = sum(r["params"] for r in rows) + last * num_classes + num_classes
    macs = sum(r["macs"] for r in rows) + last * num_classes
    return ModelSummary(params, macs, rows)


def training_bytes(blocks: int, k: int, width: int, batch_size: int) -> int:
    """A generous estimate of the memory one fp32 training step of this network needs, in bytes.

    Weights, gradients and Adam's two moments, plus what backward keeps per block: the input, the K
    convolution outputs, the mixed output and a handful of same-sized tensors (BatchNorm, shortcut,
    activation, pooling), and the per-sample kernels that the CPU's `persample` implementation builds.
    An upper bound rather than a measurement: its use is to refuse, before allocating, what cannot fit.
    """
    summary = summarize_shape(blocks, k, width)
    floats = FLOATS_PER_PARAM * summary.params
    for c_in, c_out, side, _ in block_shapes(blocks, width):
        floats += batch_size * (side * side * (c_in + (k + 6) * c_out) + c_out * c_in * 9)
    return floats * BYTES_PER_FLOAT

import pytest
import torch

from cifar_app.config import TrainConfig
from cifar_app.config import ConfigError
from cifar_app.model.network import (
    DynamicConv2d, DynamicConvNet, IMPLEMENTATIONS, build_model, dynamic_conv, init_weights, summarize,
)
from cifar_app.shape import stage_plan, summarize_shape


@pytest.mark.parametrize("blocks, k", [(1, 1), (3, 2), (6, 3), (11, 4)])
def test_logits_and_attention_shapes(blocks, k):
    model = DynamicConvNet(blocks=blocks, k=k, width=8)
    logits, attention = model.forward_with_attention(torch.randn(5, 3, 32, 32))
    assert logits.shape == (5, 10)
    assert len(attention) == blocks and all(a.shape == (5, k) for a in attention)
    assert all(torch.allclose(a.sum(1), torch.ones(5)) and (a >= 0).all() for a in attention)


def test_the_seed_architecture():
    plan = stage_plan(11, 32)
    assert [c for c, _ in plan] == [32, 32, 64, 64, 64, 128, 128, 128, 256, 256, 256]
    assert [i + 1 for i, (_, pool) in enumerate(plan) if pool] == [2, 5, 8]
    model = build_model(TrainConfig())
    summary = summarize(model)
    # parameters by hand: per block K 3x3 kernels + attention Linear + BN, a 1x1 conv + BN where widths change
    expected = 10 * 256 + 10  # classifier
    c_in = 3
    for c_out, _ in plan:
        expected += 4 * c_out * c_in * 9 + (c_in * 4 + 4) + 2 * c_out
        if c_in != c_out:
            expected += c_in * c_out + 2 * c_out
        c_in = c_out
    assert summary.params == expected
    assert len(summary.blocks) == 11 and summary.blocks[2]["resolution"] == "16x16"
    assert summary.macs == counted_macs(model)


def counted_macs(model: DynamicConvNet) -> int:
    """Multiply-adds of one 32x32 image, counted from the tensors a forward pass really makes."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(module, DynamicConv2d):  # K convolutions, the mixing, the attention Linear
            total += out.numel() * module.c_in * 9 * module.k + module.k * out.numel() + module.c_in * module.k
        elif isinstance(module, torch.nn.Conv2d):
            total += out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear) and module is model.fc:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return total


@pytest.mark.parametrize("shape", [(2, 3, 8, 32, 32, 4), (5, 16, 16, 16, 16, 2), (3, 8, 24, 7, 9, 3), (1, 4, 4, 4, 4, 1)])
def test_the_implementations_agree_forward_and_backward(shape):
    b, c_in, c_out, h, w, k = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(b, c_in, h, w, generator=gen, dtype=torch.float64)
    weight = torch.randn(k * c_out, c_in, 3, 3, generator=gen, dtype=torch.float64)
    a = torch.softmax(torch.randn(b, k, generator=gen, dtype=torch.float64), 1)
    results = {}
    for impl in IMPLEMENTATIONS:
        xs, ws, as_ = (t.clone().requires_grad_() for t in (x, weight, a))
        out = dynamic_conv(xs, ws, as_, impl)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        results[impl] = (out, xs.grad, ws.grad, as_.grad)
    # the definition, written out: sum_k a_k conv(x, W_k)
    ref = sum(a[:, i, None, None, None] * torch.nn.functional.conv2d(x, weight[i * c_out:(i + 1) * c_out], padding=1)
              for i in range(k))
    for impl, tensors in results.items():
        torch.testing.assert_close(tensors[0], ref, msg=impl)
        for mine, loop in zip(tensors[1:], results["loop"][1:]):
            torch.testing.assert_close(mine, loop, msg=impl)


def test_models_with_different_implementations_give_the_same_logits():
    torch.manual_seed(0)
    model = DynamicConvNet(blocks=4, k=3, width=8)
    init_weights(model)
    model.eval()
    x = torch.randn(6, 3, 32, 32)
    outputs = []
    for impl in IMPLEMENTATIONS:
        model.set_impl(impl)
        outputs.append(model(x))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], atol=1e-4, rtol=1e-4)


def test_zero_init_makes_blocks_start_from_their_shortcut():
    model = build_model(TrainConfig(blocks=3, width=8, k=2, zero_init_bn=True))
    assert all(block.bn.weight.abs().sum() == 0 for block in model.blocks)
    assert all(block.bn.weight.abs().sum() > 0 for block in build_model(TrainConfig(blocks=3, width=8, k=2)).blocks)


def test_temperature_flattens_the_attention():
    model = DynamicConvNet(blocks=2, k=4, width=8)
    x = torch.randn(8, 3, 32, 32)
    sharp = model.forward_with_attention(x)[1][1]
    model.set_temperature(100.0)
    flat = model.forward_with_attention(x)[1][1]
    assert (flat - 0.25).abs().max() < (sharp - 0.25).abs().max()
    assert (flat - 0.25).abs().max() < 0.02


def test_initial_weights_depend_on_the_seed_alone():
    torch.manual_seed(1)
    first = build_model(TrainConfig(blocks=3, width=8, k=2, seed=5))
    torch.manual_seed(2)  # someone else drew from the global generator meanwhile
    second = build_model(TrainConfig(blocks=3, width=8, k=2, seed=5))
    other = build_model(TrainConfig(blocks=3, width=8, k=2, seed=6))
    for a, b, c in zip(first.state_dict().values(), second.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(first.blocks[1].conv.weight, other.blocks[1].conv.weight)


@pytest.mark.parametrize("blocks, k, width", [(1, 1, 4), (5, 3, 12), (11, 4, 32), (13, 2, 16)])
def test_the_summary_counts_without_building(blocks, k, width):
    model = DynamicConvNet(blocks=blocks, k=k, width=width)
    summary = summarize_shape(blocks, k, width)
    assert summary.params == sum(p.numel() for p in model.parameters())
    assert summary.macs == counted_macs(model)


def test_a_model_that_validation_refuses_is_never_built():
    with pytest.raises(ConfigError, match="M parameters"):
        build_model(TrainConfig(blocks=30, k=16, width=256))  # 5,968 M parameters: refused before allocating


def test_a_model_saved_before_the_temperature_was_state_loads_at_its_temperature():
    model = DynamicConvNet(blocks=3, k=2, width=8)
    model.set_temperature(7.0)
    state = model.state_dict()
    assert state["blocks.0.conv.temperature"] == 7.0  # plain load_state_dict restores it
    old = {k: v for k, v in state.items() if not k.endswith("temperature")}
    again = DynamicConvNet(blocks=3, k=2, width=8)
    again.load_weights(old, temperature=7.0)
    assert again.temperature() == 7.0

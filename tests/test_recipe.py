"""Every ingredient of the `best` recipe is a TrainConfig field that does what it says, and a short run
with each switched on or off still trains (issue 7: the GPU measures what each is worth)."""

import pytest
import torch

from cifar_app.config import PRESETS, TrainConfig, preset
from cifar_app.engine.evaluation import predict_logits
from cifar_app.model.network import build_model
from cifar_app.engine.schedule import attention_temperature
from cifar_app.model.step import make_optimizer
from cifar_app.engine.loop import train
from conftest import tiny_config

INGREDIENTS = {
    "augment": ("augment", False),
    "cutout": ("cutout", 0),
    "label smoothing": ("label_smoothing", 0.0),
    "one-cycle schedule": ("schedule", "none"),
    "SGD with Nesterov momentum": ("optimizer", "adam"),
    "attention temperature": ("attn_temperature", 1.0),
    "zero-init of the block BatchNorm": ("zero_init_bn", False),
    "no decay of BatchNorm and biases": ("decay_all", True),
    "flip test-time augmentation": ("tta_flip", False),
}


def test_best_differs_from_seed_exactly_by_its_ingredients():
    best, seed = preset("best"), preset("seed")
    for name, (field, seed_value) in INGREDIENTS.items():
        assert getattr(seed, field) == seed_value, name
        assert getattr(best, field) != seed_value, name
    assert best.blocks == seed.blocks == 11 and best.k == seed.k and best.width == seed.width == 64
    assert best.val_size == 5000  # honest model selection
    # nothing else differs, apart from the settings an ingredient brings with it
    settings = {"warmup_epochs", "lr", "batch_size", "attn_anneal_epochs", "val_size"}
    assert set(seed.differences(best)) == {field for field, _ in INGREDIENTS.values()} | settings


# the width is the network's size, not a switch of the recipe: the tiny runs below keep theirs
SWITCHES = [name for name, (field, _) in INGREDIENTS.items() if field != "width"]


@pytest.mark.parametrize("name", SWITCHES)
def test_a_short_best_run_without_each_ingredient_still_learns(name, tiny_data):
    field, off = INGREDIENTS[name]
    recipe = {k: v for k, v in PRESETS["best"].items() if k not in ("width", "batch_size", "val_size")}
    recipe.update(attn_anneal_epochs=1, warmup_epochs=0.5, lr=0.05)
    recipe[field] = off
    assert tiny_config(**recipe) != tiny_config(**{**recipe, field: PRESETS["best"][field]})  # the switch is off
    config = tiny_config(epochs=3, **recipe, val_size=40)
    result = train(config, data=tiny_data)
    assert result.status == "finished", result.reason
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.best.val_acc is not None


def test_attention_temperature_anneals_to_one():
    config = TrainConfig(attn_temperature=30.0, attn_anneal_epochs=10)
    assert attention_temperature(config, 0) == 30.0
    assert attention_temperature(config, 5) == pytest.approx(15.5)
    assert attention_temperature(config, 10) == attention_temperature(config, 20) == 1.0
    assert attention_temperature(TrainConfig(attn_temperature=4.0), 7) == 4.0


def test_flip_tta_averages_an_image_and_its_mirror(tiny_data):
    model = build_model(tiny_config())
    images = tiny_data.test_images[:8]
    plain = predict_logits(model, images, torch.device("cpu"))
    mirrored = predict_logits(model, images.flip(3), torch.device("cpu"))
    both = predict_logits(model, images, torch.device("cpu"), tta_flip=True)
    torch.testing.assert_close(both, (plain + mirrored) / 2)


def test_decay_all_decides_which_parameters_decay():
    model = build_model(tiny_config())
    def decayed(config):
        return sum(p.numel() for g in make_optimizer(config, model).param_groups if g["weight_decay"] > 0
                   for p in g["params"])
    total = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() for p in model.parameters() if p.ndim > 1)
    assert decayed(tiny_config(decay_all=True)) == total
    assert decayed(tiny_config(decay_all=False)) == weights < total


def test_sgd_uses_nesterov_momentum():
    model = build_model(tiny_config())
    group = make_optimizer(tiny_config(optimizer="sgd", momentum=0.9), model).param_groups[0]
    assert group["nesterov"] and group["momentum"] == 0.9

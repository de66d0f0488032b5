import json

import pytest

from cifar_app.config import ConfigError, TrainConfig, matching_preset, preset
from cifar_app.engine.cli import build_parser


def test_defaults_are_the_coursework_recipe():
    config = TrainConfig()
    assert (config.blocks, config.optimizer, config.lr, config.weight_decay) == (11, "adam", 1e-3, 5e-4)
    assert (config.batch_size, config.epochs, config.schedule, config.augment) == (256, 25, "none", False)
    assert config.validate() == []
    assert matching_preset(config.replace(width=64)) == "seed"  # the width is the one choice the coursework left open


@pytest.mark.parametrize(
    "change, words",
    [
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"lr": 0}, "learning rate must be positive"),
        ({"lr": -1e-3}, "learning rate must be positive"),
        ({"k": 0}, "K (convolutions per block) must be at least 1"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd"),
        ({"label_smoothing": 1.0}, "label smoothing must be in [0, 1)"),
        ({"warmup_epochs": 30}, "warm-up (30 epochs) must be shorter than the run"),
    ],
)
def test_impossible_values_are_explained(change, words):
    config = TrainConfig(**change)
    assert any(words in problem for problem in config.validate())
    with pytest.raises(ConfigError) as error:
        config.check()
    assert words in str(error.value)


def test_every_problem_is_listed_at_once():
    problems = TrainConfig(batch_size=0, lr=0, k=0).validate()
    assert len(problems) == 3


def test_json_round_trip_and_unknown_keys():
    config = preset("quick", seed=7, name="mine")
    again = TrainConfig.from_json(config.to_json())
    assert again == config
    assert TrainConfig.from_dict({**json.loads(config.to_json()), "from_the_future": 1}) == config


def test_presets_differ_only_where_they_say():
    quick = preset("quick")
    assert quick.blocks == 11 and quick.width < TrainConfig().width
    assert matching_preset(quick) == "quick"
    assert matching_preset(quick.replace(device="cpu", data_dir="elsewhere")) == "quick"
    assert matching_preset(quick.replace(lr=0.5)) is None
    assert preset("best").val_size == 5000
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("fastest")


def test_cli_help_lists_every_hyperparameter():
    text = build_parser().format_help()
    for flag in ("--epochs", "--batch-size", "--lr", "--weight-decay", "--optimizer", "--schedule",
                 "--label-smoothing", "--augment", "--no-augment", "--blocks", "--k", "--width", "--seed",
                 "--device", "--data-dir", "--train-subset", "--val-size", "--runs-dir", "--preset"):
        assert flag in text, flag
    assert "adamw" in text and "onecycle" in text and "mps" in text


def test_a_network_too_large_to_train_is_refused_before_it_is_built():
    problems = TrainConfig(width=256, k=16, blocks=30).validate()
    assert len(problems) == 1 and "M parameters" in problems[0] and "lower the width" in problems[0]
    assert TrainConfig(width=64).validate() == []

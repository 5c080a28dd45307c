import json
import warnings

import pytest

from nbtoolkit.advisor import warn_launch
from nbtoolkit.training.config import (
    CONFIGS, EvalConfig, HyperparameterWarning, RFTLoraConfig, SFTFullConfig, SFTLoraConfig, load_config,
)


def test_local_and_nova_defaults_differ_and_show_side_by_side():
    local, nova = SFTLoraConfig.for_platform("local"), SFTLoraConfig.for_platform("nova")
    assert (local.lr, nova.lr) == (2e-4, 1e-5)
    assert (local.alpha, nova.alpha) == (32, 64)
    table = SFTLoraConfig.defaults_table()
    assert table.loc["lr", "local default"] == 2e-4 and table.loc["lr", "nova default"] == 1e-5
    assert table.loc["global_batch_size", "nova bounds"] == "{32, 64, 128}"
    assert "learning rate" in table.loc["lr", "help"]


def test_nova_rft_matches_the_seed_overrides():
    rft = RFTLoraConfig.for_platform("nova")
    assert (rft.lr, rft.number_generation, rft.max_new_tokens, rft.kl_loss_coef, rft.temperature, rft.ent_coeff,
            rft.max_steps, rft.save_steps, rft.top_k, rft.global_batch_size) == (
        1e-5, 4, 50, 0.02, 1.0, 0.01, 40, 30, 5, 64)
    assert SFTFullConfig.for_platform("nova").lr == 5e-6


@pytest.mark.parametrize("overrides,match", [
    ({"global_batch_size": 48}, "not allowed for nova: choose one of \\[32, 64, 128\\]"),
    ({"alpha": 40}, "alpha=40 is not allowed"),
    ({"lr": 1e-3}, "lr=0.001 is out of bounds for nova: allowed 1e-06 to 0.0001"),
    ({"max_steps": 2, "warmup_steps": 0, "save_steps": 1}, "max_steps=2 is out of bounds"),
])
def test_out_of_bounds_values_get_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        SFTLoraConfig.for_platform("nova", **overrides)


def test_cross_field_rules():
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        SFTLoraConfig.for_platform("local", global_batch_size=12, micro_batch_size=8)
    with pytest.raises(ValueError, match="save_steps"):
        SFTLoraConfig.for_platform("local", max_steps=10, save_steps=20, warmup_steps=1)
    with pytest.raises(ValueError, match="multiple of number_generation"):
        RFTLoraConfig.for_platform("local", global_batch_size=6, micro_batch_size=6, number_generation=4)


def test_unknown_override_suggests_the_seed_name():
    with pytest.raises(ValueError, match="did you mean 'warmup_steps'"):
        SFTLoraConfig.for_platform("local", warmup_step=3)


def test_changing_lr_while_mixing_warns():
    with pytest.warns(HyperparameterWarning, match="while mixing data"):
        warn_launch(SFTLoraConfig.for_platform("local", mixing=True, lr=3e-4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_launch(SFTLoraConfig.for_platform("local", mixing=True))


def test_far_from_default_lr_warns():
    with pytest.warns(HyperparameterWarning, match="10x away"):
        warn_launch(SFTLoraConfig.for_platform("local", lr=1e-6))


def test_a_config_holds_hard_bounds_only():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # soft rules are the advisor's: building a risky config never warns
        SFTLoraConfig.for_platform("local", mixing=True, lr=1e-6, warmup_steps=150, max_steps=200)


def test_json_round_trip_and_changed(tmp_path):
    config = SFTLoraConfig.for_platform("local", lora_r=8, max_steps=50, target_modules=("q_proj", "v_proj"))
    assert config.changed() == {"max_steps": 50, "lora_r": 8, "target_modules": ("q_proj", "v_proj")}
    path = config.save(tmp_path / "c.json")
    assert json.loads(path.read_text())["method"] == "sft_lora"
    assert load_config(path) == config
    assert set(CONFIGS) == {"sft_lora", "sft_full", "rft_lora", "eval"}
    assert EvalConfig.from_dict(EvalConfig().to_dict()) == EvalConfig()

"""The advisor: each of its checks fires when it should and stays silent otherwise."""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest

from nbtoolkit.advisor import (
    Advice,
    AdviceList,
    advise_launch,
    advise_running,
    check_kl_blowup,
    check_loss_spikes,
    check_lr_while_mixing,
    check_rai,
    check_reasoning_instruction_following,
    check_reward_collapse,
    check_rft_baseline,
    check_save_steps,
    check_warmup,
    warn_launch,
)
from nbtoolkit.mixing import MixConfig, mix_preset
from nbtoolkit.training.config import HyperparameterWarning, RFTLoraConfig, SFTLoraConfig

GOOD_MIX = MixConfig(50, {"reasoning-instruction-following": 60, "instruction-following": 30, "rai": 10})


def test_lr_changed_while_mixing():
    assert check_lr_while_mixing(3e-4, 2e-4, mixing=True)[0].code == "lr-while-mixing"
    assert check_lr_while_mixing(2e-4, 2e-4, mixing=True) == []
    assert check_lr_while_mixing(3e-4, 2e-4, mixing=False) == []
    assert check_lr_while_mixing(3e-4, None, mixing=True) == []


def test_a_launch_warns_through_the_same_check():
    with pytest.warns(HyperparameterWarning, match="while mixing data"):
        warn_launch(SFTLoraConfig.for_platform("local", mixing=True, lr=3e-4))


def test_mix_without_reasoning_instruction_following():
    no_rif = MixConfig(50, {"instruction-following": 90, "rai": 10})
    assert check_reasoning_instruction_following(no_rif)[0].field == "reasoning-instruction-following"
    assert check_reasoning_instruction_following(GOOD_MIX) == []
    assert check_reasoning_instruction_following(no_rif, method="rft_lora") == []
    assert check_reasoning_instruction_following(MixConfig.customer_only()) == []
    assert check_reasoning_instruction_following(None) == []


def test_rai_at_zero():
    assert check_rai(MixConfig(50, {"reasoning-instruction-following": 100}))[0].code == "rai-zero"
    assert check_rai(GOOD_MIX) == []
    assert check_rai(mix_preset("all-categories-50")) == []
    assert check_rai(MixConfig.customer_only()) == []


@pytest.mark.parametrize("warmup,steps,fires", [(15, 100, False), (5, 100, False), (30, 100, False),
                                                 (0, 100, True), (2, 100, True), (50, 100, True), (1, 4, False),
                                                 (3, 4, True)])
def test_warmup_far_from_15_percent(warmup, steps, fires):
    advice = check_warmup(warmup, steps)
    assert bool(advice) == fires
    if fires:
        assert "warmup_steps=15" in check_warmup(0, 100)[0].message


def test_save_steps_beyond_max_steps():
    assert check_save_steps(120, 100)[0].level == "error"
    assert check_save_steps(100, 100) == [] and check_save_steps(10, 100) == []


def test_rft_with_a_low_positive_baseline():
    assert check_rft_baseline(0.02)[0].code == "rft-low-baseline"
    assert check_rft_baseline(0.99)[0].code == "rft-high-baseline"
    assert check_rft_baseline(0.3) == [] and check_rft_baseline(None) == []


def test_advise_launch_runs_what_applies_to_a_config_or_form_values():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        risky = SFTLoraConfig.for_platform("local", lr=3e-4, warmup_steps=0, max_steps=100, save_steps=50)
    codes = advise_launch(risky, mix=MixConfig(50, {"instruction-following": 100})).codes
    assert codes == ["lr-while-mixing", "mix-without-reasoning-instruction-following", "rai-zero", "warmup"]
    default = SFTLoraConfig.for_platform("local", warmup_steps=30, max_steps=200)
    assert advise_launch(default, mix=GOOD_MIX) == []
    assert advise_launch(default) == []
    form_values = {"lr": 2e-4, "warmup_steps": 10, "max_steps": 100, "save_steps": 150}
    assert advise_launch(form_values, method="sft_lora", platform="local").codes == ["save-steps"]
    rft = RFTLoraConfig.for_platform("local", warmup_steps=5)
    assert advise_launch(rft, positive_share=0.01).codes == ["rft-low-baseline"]
    assert advise_launch(rft, positive_share=0.5) == []
    assert advise_launch(default, mix=GOOD_MIX.to_dict()) == []


def _losses(values):
    return pd.DataFrame({"step": range(1, len(values) + 1), "loss": values})


def test_loss_spikes():
    steady = [2.0, 1.9, 1.8, 1.7, 1.7, 1.6, 1.5, 1.5, 1.4]
    assert check_loss_spikes(_losses(steady)) == []
    spike = check_loss_spikes(_losses(steady + [4.2, 1.4]))
    assert spike[0].code == "loss-spike" and spike[0].step == 10
    assert check_loss_spikes(_losses([1.0, 5.0])) == []  # too little history to call it a spike
    diverged = _losses([1.0, 0.9, math.nan]).assign(lr=1e-4)
    assert check_loss_spikes(diverged)[0].code == "loss-not-finite"
    assert check_loss_spikes([{"step": 1, "loss": 1.0, "lr": 1e-4}, {"step": 2, "loss": None, "lr": 1e-4}])[0].step == 2
    eval_rows = pd.DataFrame([*({"step": s, "loss": 1.0} for s in range(1, 7)),
                              {"step": 7, "eval_loss": 9.0, "phase": "eval"}])
    assert check_loss_spikes(eval_rows) == []


def _rft_rows(rewards, kls):
    return [{"step": i + 1, "phase": "train", "reward_mean": r, "kl": k, "loss": 0.1}
            for i, (r, k) in enumerate(zip(rewards, kls))]


def test_reward_collapse():
    healthy = _rft_rows([0.1, 0.2, 0.2, 0.3, 0.4, 0.4], [0.01] * 6)
    assert check_reward_collapse(healthy) == []
    collapsed = check_reward_collapse(_rft_rows([0.5, 0.6, 0.5, -0.4, -0.6, -0.7], [0.01] * 6))
    assert collapsed[0].code == "reward-collapse" and collapsed[0].step == 6


def test_kl_blowup():
    assert check_kl_blowup(_rft_rows([0.1] * 5, [0.05, 0.06, 0.08, 0.1, 0.12])) == []
    blown = check_kl_blowup(_rft_rows([0.1] * 5, [0.05, 0.1, 0.4, 2.5, 3.0]))
    assert blown[0].code == "kl-blowup" and blown[0].step == 4


def test_advise_running_picks_the_checks_for_the_metrics():
    assert advise_running(_losses([1.0] * 8)) == []
    rows = _rft_rows([0.5, 0.6, 0.5, -0.4, -0.6, -0.7], [0.05, 0.1, 0.4, 2.5, 3.0, 3.0])
    assert set(advise_running(rows).codes) == {"reward-collapse", "kl-blowup"}


def test_advise_job_reads_the_spec_mix_and_the_metrics_so_far():
    from types import SimpleNamespace

    from nbtoolkit.advisor import advise_job
    from nbtoolkit.runtime import JobSpec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = SFTLoraConfig.for_platform("local", lr=3e-4, mixing=True, warmup_steps=30, max_steps=200)
    spec = JobSpec("sft_lora", config, model="m", train_file="t.jsonl",
                   extra={"mix": MixConfig(50, {"reasoning-instruction-following": 100}).to_dict()})
    job = SimpleNamespace(spec=spec, metrics=lambda: _losses([1.0] * 9 + [3.0]))
    assert advise_job(job).codes == ["lr-while-mixing", "rai-zero", "loss-spike"]


def test_advice_renders_for_people():
    advice = AdviceList([Advice("x", "warning", "lower <lr>")])
    assert "lower &lt;lr&gt;" in advice._repr_html_() and "[warning]" in str(advice)
    assert "No advice" in AdviceList()._repr_html_()
    with pytest.raises(ValueError, match="level"):
        Advice("x", "loud", "?")

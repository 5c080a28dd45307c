"""RFT (GRPO + LoRA) on the tiny model: a short run, stop and resume, the reward wrapper, the config mapping."""

from __future__ import annotations

import math
import threading

import pytest

from nbtoolkit.data.formats import write_jsonl
from nbtoolkit.models import load_model, tiny_model
from nbtoolkit.runtime.events import RunLog, read_metrics
from nbtoolkit.training import grpo, rft
from nbtoolkit.training.config import RFTLoraConfig

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]


def _record(i: int) -> dict:
    return {"id": f"q{i}", "messages": [{"role": "system", "content": "Classify the question."},
                                        {"role": "user", "content": f"question {i}: how do I sort a list?"}],
            "reference_answer": LABELS[i % 3]}


def _config(**overrides) -> RFTLoraConfig:
    values = {"max_steps": 2, "warmup_steps": 0, "save_steps": 2, "global_batch_size": 8, "micro_batch_size": 4,
              "number_generation": 4, "max_new_tokens": 6, "lr": 1e-4, **overrides}
    return RFTLoraConfig.for_platform("local", **values)


def length_parity_reward(samples: list[dict]) -> list[dict]:
    """+1 for a reply of odd length, -1 otherwise: random replies of the tiny model get both, so groups vary."""
    return [{"id": s["id"], "aggregate_reward_score": 1.0 if len(s["messages"][-1]["content"]) % 2 else -1.0}
            for s in samples]


def always_negative(samples: list[dict]) -> list[dict]:
    return [{"id": s["id"], "aggregate_reward_score": -1.0} for s in samples]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The tiny model saved as a full model directory, and a 12-prompt rft training file."""
    root = tmp_path_factory.mktemp("rft")
    tiny_model(seed=0, vocab_from=None).save(root / "model")
    write_jsonl([_record(i) for i in range(12)], root / "train.jsonl")
    return root


def _run(workspace, run_dir, config, log=None, **kwargs):
    return rft.run_rft(config, model=workspace / "model", train_file=workspace / "train.jsonl", run_dir=run_dir,
                       labels=LABELS, log=log or RunLog(run_dir, echo=None), **kwargs)


class StopAtStep(RunLog):
    """A run log that requests a stop once the training row of `step` is written (as a notebook's Stop button
    would)."""

    def __init__(self, run_dir, stop: threading.Event, step: int) -> None:
        super().__init__(run_dir, echo=None)
        self.stop, self.step = stop, step

    def metric(self, **values) -> None:
        super().metric(**values)
        if values.get("phase") == "train" and values.get("step") == self.step:
            self.stop.set()


# ---------------------------------------------------------------------------------------------------------------
# Pure parts


def test_frac_zero_variance_groups_counts_groups_with_equal_rewards():
    rewards = [1, 1, 1, 1,  1, -1, 1, 1,  -1, -1, -1, -1]
    assert rft.frac_zero_variance_groups(rewards, 4) == pytest.approx(2 / 3)
    assert rft.frac_zero_variance_groups(rewards, 2) == pytest.approx(5 / 6)
    # None/NaN are ignored; a group left with one valid reward has no variance
    assert rft.frac_zero_variance_groups([1.0, None, -1.0, math.nan], 2) == 1.0
    assert rft.frac_zero_variance_groups([1.0, None, -1.0, 0.5], 2) == 0.5
    with pytest.raises(ValueError, match="groups of 4"):
        rft.frac_zero_variance_groups([1, 1, 1], 4)


def test_batch_plan_counts_prompts_and_forward_passes():
    plan = rft.batch_plan(_config(global_batch_size=16, micro_batch_size=4, number_generation=4))
    assert (plan.prompts_per_step, plan.completions_per_step, plan.gradient_accumulation_steps) == (4, 16, 4)
    # a micro batch above the group scores the group in one pass (its prompt computed once)
    plan = rft.batch_plan(_config(global_batch_size=8, micro_batch_size=8, number_generation=4))
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps) == (4, 2)
    plan = rft.batch_plan(_config(global_batch_size=8, micro_batch_size=2, number_generation=4))
    assert (plan.micro_batch_size, plan.gradient_accumulation_steps) == (2, 4)


def test_group_advantages_are_normalized_within_the_group():
    advantages = grpo.group_advantages([1.0, -1.0, -1.0, -1.0])
    assert float(advantages.sum()) == pytest.approx(0.0, abs=1e-6)
    assert float(advantages[0]) > 0 > float(advantages[1])
    assert float(advantages.std()) == pytest.approx(1.0, abs=1e-3)
    assert grpo.group_advantages([1.0, 1.0, 1.0]).abs().max() == 0.0


def test_prompt_stream_is_a_function_of_seed_and_position():
    stream = rft.PromptStream(5, seed=3)
    drawn = [stream.next() for _ in range(12)]
    assert sorted(drawn[:5]) == sorted(drawn[5:10]) == list(range(5))  # each epoch is a permutation
    resumed = rft.PromptStream(5, seed=3, position=7)
    assert [resumed.next() for _ in range(5)] == drawn[7:] and resumed.position == 12


def _tiny_policy():
    import torch
    from peft import LoraConfig, get_peft_model

    loaded = tiny_model(seed=0, vocab_from=None)
    torch.manual_seed(0)
    policy = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                                     task_type="CAUSAL_LM", init_lora_weights=False))
    return loaded, policy


def _groups(loaded, prompt_length: int = 24) -> list:
    """Two prompts sharing a long head (as a system prompt does), four replies each of different lengths."""
    head = [(7 * i) % 90 + 5 for i in range(prompt_length)]
    prompts = [head + [11, 12], head + [13]]
    replies = [[[20, 21], [22], [23, 24, 25], [20]], [[30], [31, 32], [33], [34, 35]]]
    rewards = [[1.0, -1.0, -1.0, 1.0], [-1.0, 1.0, -1.0, -1.0]]
    return [grpo.ReplyGroup({"id": str(k)}, prompts[k], replies[k], [False] * 4, rewards[k]) for k in range(2)]


def _gradient(policy, groups, mode, micro_batch_size: int):
    import contextlib

    policy.zero_grad(set_to_none=True)
    stats = grpo.backward_groups(policy, groups, kl_coef=0.05, entropy_coef=0.01, pad_id=0, device="cpu",
                                 autocast=contextlib.nullcontext, micro_batch_size=micro_batch_size, mode=mode)
    grads = [p.grad.clone() for p in policy.parameters() if p.requires_grad]
    return stats, grads


def test_grpo_gradient_is_exact_with_a_shared_prompt_and_any_micro_batch():
    from nbtoolkit.training.sft import LossMode

    loaded, policy = _tiny_policy()
    groups = _groups(loaded)
    reference, reference_grads = _gradient(policy, groups, LossMode(False, False), 4)  # full logits, no sharing
    for mode, micro in ((LossMode(True, True), 4), (LossMode(True, True), 1), (LossMode(True, False), 3)):
        stats, grads = _gradient(policy, groups, mode, micro)
        assert stats.tokens == reference.tokens == 13
        assert stats.loss == pytest.approx(reference.loss, rel=1e-4)
        assert stats.kl == pytest.approx(reference.kl, abs=1e-6)
        for a, b in zip(grads, reference_grads):
            assert float((a - b).abs().max()) <= 1e-5 + 1e-3 * float(b.abs().max())
    assert reference.kl > 0  # adapters initialised off zero: the policy differs from the reference


def test_grpo_step_raises_rewarded_replies_and_lowers_the_others():
    import contextlib

    import torch

    from nbtoolkit.training.sft import LossMode

    loaded, policy = _tiny_policy()
    group = _groups(loaded)[0]
    examples = group.examples()

    def logps():
        with torch.no_grad():
            chosen, _ = grpo.token_logprobs(policy, examples, 0, "cpu", LossMode())
        return [float(x.sum()) for x in chosen.split([e.answer_length for e in examples])]

    before = logps()
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        grpo.backward_groups(policy, [group], kl_coef=0.0, entropy_coef=0.0, pad_id=0, device="cpu",
                             autocast=contextlib.nullcontext, micro_batch_size=4)
        optimizer.step()
    after = logps()
    for reward, old, new in zip(group.rewards, before, after):
        assert (new > old) if reward > 0 else (new < old), (reward, old, new)


def _label_group(rewards=(1.0, -1.0, -1.0)):
    head = [(7 * i) % 90 + 5 for i in range(24)]
    replies = [[22, 2], [25, 2], [31, 2]]  # about equally likely under the tiny policy
    return grpo.ReplyGroup({"id": "0"}, head + [11], replies, [False] * 3, list(rewards))


def test_label_group_gradient_is_the_normalized_gradient_of_the_expected_reward():
    """Without KL and entropy, the label-group loss's gradient is -grad(J) / ((std + eps) x mean reply length),
    J = sum_i q_i r_i with q the replies' probabilities renormalized over the group."""
    import contextlib

    import torch

    from nbtoolkit.training.sft import LossMode

    loaded, policy = _tiny_policy()
    group = _label_group()
    policy.zero_grad(set_to_none=True)
    stats, row = grpo.backward_label_groups(policy, [group], kl_coef=0.0, entropy_coef=0.0, pad_id=0, device="cpu",
                                            autocast=contextlib.nullcontext, prompts_per_pass=1,
                                            mode=LossMode(True, True))
    trainable = [p for p in policy.parameters() if p.requires_grad]
    grads = [p.grad.clone() for p in trainable]

    policy.zero_grad(set_to_none=True)
    examples = group.examples()
    logp, _ = grpo.token_logprobs(policy, examples, 0, "cpu", LossMode())
    sequence = torch.stack([part.sum() for part in logp.split([e.answer_length for e in examples])])
    q = torch.softmax(sequence, dim=0)
    rewards = torch.tensor(group.rewards)
    expected = (q * rewards).sum()
    with torch.no_grad():
        spread = (q * (rewards - expected) ** 2).sum().sqrt()
        length = (q * torch.tensor([2.0, 2.0, 2.0])).sum()
    (-expected / ((spread + grpo.ADVANTAGE_EPS) * length)).backward()
    for a, p in zip(grads, trainable):
        b = p.grad
        assert float((a - b).abs().max()) <= 1e-6 + 1e-3 * float(b.abs().max())
    assert row["reward_mean"] == pytest.approx(float(expected.detach()), abs=1e-5)
    assert float(q.min()) > 0.2 and row["frac_zero_variance_groups"] == 0.0 and stats.tokens == 6
    assert stats.means()["kl"] is None  # kl_coef 0: no reference pass, nothing measured


def test_label_groups_of_a_step_in_one_batch_match_each_group_scored_alone():
    """Prompts of different lengths sharing a head: the batched pass (head once, each prompt once, every label in
    the prompt's row) gives the same log-probs, entropies and gradient as full logits per group, in passes of any
    number of prompts."""
    import contextlib

    from nbtoolkit.training.sft import LossMode

    loaded, policy = _tiny_policy()
    head = [(7 * i) % 90 + 5 for i in range(24)]
    replies = [[22, 2], [25, 26, 2], [31, 2]]
    groups = [grpo.ReplyGroup({"id": str(k)}, head + tail, replies, [False] * 3, rewards)
              for k, (tail, rewards) in enumerate([([11], [1.0, -1.0, -1.0]), ([12, 13, 14], [-1.0, 1.0, -1.0]),
                                                  ([15, 16], [-1.0, -1.0, 1.0])])]
    results = []
    for mode, per_pass in ((LossMode(True, True), 2), (LossMode(False, False), 3)):
        logp, entropy = grpo.label_logprobs(policy, groups, 0, "cpu", mode)
        policy.zero_grad(set_to_none=True)
        stats, row = grpo.backward_label_groups(policy, groups, kl_coef=0.05, entropy_coef=0.01, pad_id=0,
                                                device="cpu", autocast=contextlib.nullcontext,
                                                prompts_per_pass=per_pass, mode=mode)
        results.append((logp.detach(), entropy.detach(), stats, row,
                        [p.grad.clone() for p in policy.parameters() if p.requires_grad]))
    (logp, entropy, stats, row, grads), (logp_ref, entropy_ref, stats_ref, row_ref, grads_ref) = results
    assert logp.shape == (3 * 7,) and float((logp - logp_ref).abs().max()) < 1e-4
    assert float((entropy - entropy_ref).abs().max()) < 1e-4
    assert stats.loss == pytest.approx(stats_ref.loss, rel=1e-3) and stats.kl == pytest.approx(stats_ref.kl, abs=1e-5)
    assert row == pytest.approx(row_ref, rel=1e-3)
    for a, b in zip(grads, grads_ref):
        assert float((a - b).abs().max()) <= 1e-6 + 1e-3 * float(b.abs().max())


def test_label_group_steps_raise_the_rewarded_label():
    import contextlib

    import torch

    loaded, policy = _tiny_policy()
    group = _label_group(rewards=(-1.0, 1.0, -1.0))
    optimizer = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=0.5)
    rewards = []
    for _ in range(4):
        optimizer.zero_grad()
        _, row = grpo.backward_label_groups(policy, [group], kl_coef=0.05, entropy_coef=0.01, pad_id=0,
                                            device="cpu", autocast=contextlib.nullcontext, prompts_per_pass=1)
        rewards.append(row["reward_mean"])
        optimizer.step()
    assert rewards == sorted(rewards) and rewards[-1] > rewards[0]


def test_label_groups_run_samples_nothing_after_the_precheck(workspace, tmp_path):
    run_dir = tmp_path / "run"
    summary = _run(workspace, run_dir, _config(label_groups=True, max_steps=3, save_steps=3))
    assert summary["status"] == "completed" and summary["prompts_drawn"] == 6
    train = [row for row in read_metrics(run_dir) if row.get("phase") == "train"]
    assert [row["trained_groups"] for row in train] == [2, 2, 2]
    assert all(row["kl"] is not None and -1.0 <= row["reward_mean"] <= 1.0 for row in train)
    assert (run_dir / "model").is_dir()
    with pytest.raises(ValueError, match="label set"):
        rft.run_rft(_config(label_groups=True), model=workspace / "model", train_file=workspace / "train.jsonl",
                    run_dir=tmp_path / "other", labels=[])


def test_window_means_skip_missing_values():
    rows = [{"kl": 0.2, "loss": 1.0}, {"kl": None, "loss": 3.0}]
    assert rft._window_means(rows) == {"kl": 0.2, "loss": 2.0}
    assert rft._window_means([{"kl": None}]) == {"kl": None}


def test_batch_plan_rejects_partial_groups():
    # The nova platform does not check this itself; a local run must score whole groups.
    config = RFTLoraConfig.for_platform("nova", global_batch_size=16, micro_batch_size=16, number_generation=3)
    with pytest.raises(ValueError, match="multiple of number_generation"):
        rft.batch_plan(config)


def test_training_health_reports_each_warning_sign_once():
    health = rft.TrainingHealth()
    rows = [{"step": s, "reward_mean": 0.6, "reward_std": 0.5, "frac_zero_variance_groups": 0.0, "kl": 0.01,
             "clipped_ratio": 0.1} for s in (1, 2, 3)]
    rows += [{"step": s, "reward_mean": -0.4, "reward_std": 0.0, "frac_zero_variance_groups": 1.0, "kl": 2.0,
              "clipped_ratio": 0.9} for s in (4, 5, 6, 7)]
    messages = [message for row in rows for message in health.update(row)]
    assert set(health.raised) == {"reward_collapse", "no_reward_variance", "kl_blowup", "max_new_tokens"}
    assert len(messages) == 4  # each kind once
    assert any("KL blow-up at step 4" in m for m in messages)
    assert any("reward collapse at step 6" in m for m in messages)
    assert any("no reward variance for 3 logged steps (step 6)" in m for m in messages)
    calm = rft.TrainingHealth()
    assert not [m for row in rows[:3] for m in calm.update(row)]


def test_load_rft_records_accepts_chat_records_and_cuts_user_turns(tmp_path):
    tokenizer = tiny_model(seed=0, vocab_from=None).tokenizer
    long_question = "why " * 200
    write_jsonl([
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": long_question},
                      {"role": "assistant", "content": "LQ_CLOSE"}]},
        {"id": 7, "messages": [{"role": "user", "content": "Q"}], "reference_answer": "HQ", "source": "x"},
    ], tmp_path / "mixed.jsonl")
    records = rft.load_rft_records(tmp_path / "mixed.jsonl", tokenizer=tokenizer, max_prompt_tokens=10)
    assert [r["id"] for r in records] == ["row-1", "7"]
    assert [r["reference_answer"] for r in records] == ["LQ_CLOSE", "HQ"]
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user"]
    assert len(tokenizer(records[0]["messages"][1]["content"], add_special_tokens=False)["input_ids"]) <= 10
    write_jsonl([{"messages": [{"role": "user", "content": "Q"}]}], tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="record 1: no 'reference_answer'"):
        rft.load_rft_records(tmp_path / "bad.jsonl")


# ---------------------------------------------------------------------------------------------------------------
# The starting model


def test_precheck_warns_when_no_reply_earns_reward():
    loaded = tiny_model(seed=0, vocab_from=None)
    records = [_record(i) for i in range(6)]
    result = rft.positive_share_precheck(loaded, records, always_negative, _config(), n_prompts=4)
    assert result["positive_share"] == 0.0 and result["reply_positive_share"] == 0.0
    assert result["prompts"] == 4 and result["samples_per_prompt"] == 4
    assert result["learnable_group_share"] == 0.0
    assert any("Do SFT first" in w for w in result["warnings"])

    # one positive reply in 24: a prompt-level share of 1/6 would pass the 5% bar, the reply-level one does not
    def one_lucky_reply(samples):
        return [{"id": s["id"], "aggregate_reward_score": 1.0 if s["id"] == "q0#0" else -1.0} for s in samples]

    lucky = rft.positive_share_precheck(loaded, records, one_lucky_reply, _config(), n_prompts=6)
    assert lucky["positive_share"] == pytest.approx(1 / 6) and lucky["reply_positive_share"] == pytest.approx(1 / 24)
    assert any("Do SFT first" in w for w in lucky["warnings"])

    varied = rft.positive_share_precheck(loaded, records, length_parity_reward, _config(), n_prompts=4)
    assert 0.0 < varied["reply_positive_share"] < 1.0 and varied["positive_share"] > 0.0
    assert not any("SFT first" in w for w in varied["warnings"])


# ---------------------------------------------------------------------------------------------------------------
# Runs on the tiny model


def test_short_run_writes_metrics_adapter_and_merged_model(workspace, tmp_path):
    run_dir = tmp_path / "run"
    summary = _run(workspace, run_dir, _config(), reward_fn=length_parity_reward)

    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["peak_rss_mb"] > 0 and summary["trained_tokens"] > 0 and summary["prompts_drawn"] >= 4
    assert summary["batch"]["prompts_per_step"] == 2 and summary["batch"]["gradient_accumulation_steps"] == 2
    rows = read_metrics(run_dir)
    assert rows[0]["phase"] == "precheck" and 0.0 < rows[0]["reply_positive_share"] < 1.0
    # Sampled before training: the precheck's prompts (16, capped at the file's 12).
    assert summary["sampled_prompts"] == 12 == summary["precheck"]["prompts"]
    assert summary["sampling_seconds"] == pytest.approx(summary["precheck"]["seconds"], abs=0.01)
    train = [row for row in rows if row.get("phase") == "train"]
    assert [row["step"] for row in train] == [1, 2]
    for row in train:
        for key in ("loss", "lr", "reward_mean", "reward_std", "frac_zero_variance_groups", "kl",
                    "completion_length", "entropy", "clipped_ratio", "seconds_per_step"):
            assert row[key] is not None, key
        assert -1.0 <= row["reward_mean"] <= 1.0 and 0.0 <= row["frac_zero_variance_groups"] <= 1.0
        assert row["completion_length"] <= 6
    assert summary["reward_mean_first"] == train[0]["reward_mean"]
    assert summary["kl_last"] == train[-1]["kl"]
    assert summary["positive_share_before"] == rows[0]["positive_share"]
    # random replies never reach the terminator within 6 tokens: the warning sign is reported
    assert any("hit max_new_tokens" in w for w in summary["warnings"])

    assert (run_dir / "adapter" / "adapter_config.json").exists()
    merged = load_model(run_dir / "model")
    start = load_model(workspace / "model")
    assert type(merged.model).__name__ == "LlamaForCausalLM"  # merged, not a PEFT wrapper
    changed = sum((a - b).abs().sum().item() for a, b in zip(merged.model.parameters(), start.model.parameters()))
    assert changed > 0
    assert not list(run_dir.glob(".model.*")) and not list(run_dir.glob(".adapter.*"))


def first_reply_wins(samples: list[dict]) -> list[dict]:
    """Only the groups of prompts q0..q2 (of 12) have rewards that differ: their first reply earns +1."""
    return [{"id": s["id"], "aggregate_reward_score": 1.0 if s["id"].endswith("#0") and s["id"][1] in "012" else -1.0}
            for s in samples]


@pytest.mark.parametrize("dynamic_sampling", [12, 0])
def test_dynamic_sampling_trains_only_groups_whose_rewards_differ(dynamic_sampling, workspace, tmp_path):
    run_dir = tmp_path / "run"
    _run(workspace, run_dir, _config(dynamic_sampling=dynamic_sampling), reward_fn=first_reply_wins)
    train = [row for row in read_metrics(run_dir) if row.get("phase") == "train"]
    if dynamic_sampling:
        # a step samples prompts until it has 2 learnable groups (3 of the 12 prompts have them)
        assert sum(row["sampled_groups"] for row in train) > sum(row["trained_groups"] for row in train)
        assert sum(row["trained_groups"] for row in train) >= 3
        assert sum(row["sampled_groups"] for row in train) <= 12
    else:
        assert all(row["sampled_groups"] == row["trained_groups"] == 2 for row in train)


def test_default_reward_by_name_and_stop_event(workspace, tmp_path):
    run_dir = tmp_path / "run"
    stop = threading.Event()
    summary = _run(workspace, run_dir, _config(max_steps=4, save_steps=4), log=StopAtStep(run_dir, stop, 1),
                   stop_event=stop)

    # the request made while step 1 was logged is honoured before step 2 starts, with a checkpoint
    assert summary["status"] == "stopped" and summary["steps"] == 1
    assert (run_dir / "checkpoints" / "step-1").is_dir()  # saved on stop, not by save_steps (4)
    assert [row["step"] for row in read_metrics(run_dir) if row.get("phase") == "train"] == [1]
    assert (run_dir / "model" / "config.json").exists()
    assert summary["reward"] == "binary_label"
    # the tiny model never names a label: every reply earns -1
    assert summary["positive_share_before"] == 0.0
    assert any("Do SFT first" in w for w in summary["warnings"])


def test_stop_before_training_trains_nothing(workspace, tmp_path):
    stop = threading.Event()
    stop.set()
    summary = _run(workspace, tmp_path / "run", _config(), reward_fn=length_parity_reward, stop_event=stop)
    assert summary["status"] == "stopped" and summary["steps"] == 0
    assert summary["paths"]["model"] is None
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model").exists()


def test_resume_continues_the_step_count(workspace, tmp_path):
    run_dir = tmp_path / "run"
    config = _config(max_steps=3, save_steps=3)
    stop = threading.Event()
    first = _run(workspace, run_dir, config, log=StopAtStep(run_dir, stop, 1), reward_fn=length_parity_reward,
                 stop_event=stop)
    assert first["steps"] == 1

    with pytest.raises(ValueError, match="resume=True"):
        _run(workspace, run_dir, config, reward_fn=length_parity_reward)

    second = _run(workspace, run_dir, config, reward_fn=length_parity_reward, resume=True)
    assert second["status"] == "completed" and second["steps"] == 3
    assert second["resumed_from"] == "step-1"
    assert second["positive_share_before"] == first["positive_share_before"]
    assert second["reward_mean_first"] == first["reward_mean_first"]  # the whole run's first reward
    rows = read_metrics(run_dir)
    assert [row["step"] for row in rows if row.get("phase") == "train"] == [1, 2, 3]
    assert [row["phase"] for row in rows].count("precheck") == 1
    assert (run_dir / "checkpoints" / "step-3").is_dir()


def test_a_resumed_run_keeps_the_warnings_raised_before_the_stop_without_repeating_them(workspace, tmp_path):
    from nbtoolkit.runtime.events import LOG_FILE

    run_dir = tmp_path / "run"
    config = _config(max_steps=5, save_steps=5, dynamic_sampling=0)
    stop = threading.Event()
    first = _run(workspace, run_dir, config, log=StopAtStep(run_dir, stop, rft.ZERO_VARIANCE_ROWS),
                 reward_fn=always_negative, stop_event=stop)
    flat = [w for w in first["warnings"] if "no reward variance" in w]
    assert first["steps"] == rft.ZERO_VARIANCE_ROWS and len(flat) == 1  # every group scores -1

    second = _run(workspace, run_dir, config, reward_fn=always_negative, resume=True)
    assert second["steps"] == 5
    assert [w for w in second["warnings"] if "no reward variance" in w] == flat
    assert (run_dir / LOG_FILE).read_text().count("no reward variance") == 1


def test_stopped_and_resumed_run_trains_the_same_adapter_as_one_run(workspace, tmp_path):
    from safetensors.torch import load_file

    config = _config(max_steps=3, save_steps=3)
    _run(workspace, tmp_path / "straight", config, reward_fn=length_parity_reward)
    run_dir, stop = tmp_path / "resumed", threading.Event()
    _run(workspace, run_dir, config, log=StopAtStep(run_dir, stop, 1), reward_fn=length_parity_reward,
         stop_event=stop)
    _run(workspace, run_dir, config, reward_fn=length_parity_reward, resume=True)

    straight = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    resumed = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert (straight[name] - resumed[name]).abs().max() < 1e-6, name
    rows = {name: [r for r in read_metrics(tmp_path / name) if r.get("phase") == "train"]
            for name in ("straight", "resumed")}
    assert [r["reward_mean"] for r in rows["straight"]] == [r["reward_mean"] for r in rows["resumed"]]

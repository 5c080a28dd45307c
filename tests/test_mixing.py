"""Data mixing: MixConfig's rules (docs/data-mixing.md), the exact batch sampler, the general-data registry and
rehearsal caching."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_file
from nbtoolkit.errors import DataError
from nbtoolkit.mixing import (
    CATEGORIES,
    CUSTOMER,
    GeneralDataRegistry,
    MixConfig,
    MixError,
    MixedBatchOrder,
    exact_shares,
    mix_preset,
    mix_problems,
    mixed_order,
    mixing_extra,
    normalize_weights,
    rehearsal_prompts,
)
from nbtoolkit.mixing import rehearsal as rehearsal_module
from nbtoolkit.mixing.registry import _gsm8k_answer, detect_schema, text_to_chat
from nbtoolkit.mixing.rehearsal import complete_reply, synthesize_rehearsal

# ---------------------------------------------------------------------------------------------------------------
# MixConfig


def test_the_all_categories_example_is_valid_and_maps_to_the_service_keys():
    mix = mix_preset("all-categories-50")
    assert mix.customer_data_percent == 50
    assert math.isclose(sum(mix.category_weights.values()), 100)
    nova = mix.to_nova()
    assert len(nova) == 1 + len(CATEGORIES) == 23
    assert nova["customer_data_percent"] == 50
    assert nova["nova_reasoning-instruction-following_percent"] == 45
    assert nova["nova_long-context_percent"] == 1
    assert MixConfig.from_nova(nova) == mix
    assert MixConfig.from_dict(nova) == mix


def test_effective_share_is_general_share_times_weight():
    mix = MixConfig(75, {"reasoning-instruction-following": 60, "rai": 40})
    shares = mix.effective_shares()
    assert shares == {CUSTOMER: 75.0, "rai": 10.0, "reasoning-instruction-following": 15.0}
    assert math.isclose(sum(shares.values()), 100)
    assert mix.table().loc["rai", "effective_percent"] == 10.0
    shares = mix_preset("all-categories-50").effective_shares()
    assert shares["reasoning-instruction-following"] == 22.5 and shares["factuality"] == 0.05


@pytest.mark.parametrize("customer,weights,match", [
    (50, {"math": 60, "rai": 30}, "sum to 100"),
    (100, {"math": 100}, "must be 0"),
    (101, {}, "between 0 and 100"),
    (50, {"math": 110, "rai": -10}, ">= 0"),
    (30, {}, "sum to 100"),
])
def test_rule_breaking_mixes_are_rejected(customer, weights, match):
    assert mix_problems(customer, weights)
    with pytest.raises(MixError, match=match):
        MixConfig(customer, weights)


def test_sum_tolerance_is_a_hundredth():
    MixConfig(50, {"math": 50.005, "rai": 50})
    with pytest.raises(MixError):
        MixConfig(50, {"math": 50.02, "rai": 50})


def test_bad_category_name_suggests_the_closest():
    with pytest.raises(MixError, match="did you mean 'reasoning-math'"):
        MixConfig(50, {"reasoning_math": 100})
    with pytest.raises(MixError, match="did you mean 'nova_rai_percent'"):
        MixConfig.from_nova({"customer_data_percent": 100, "nova_ria_percent": 0})
    with pytest.raises(MixError, match="mix preset"):
        mix_preset("all-categories-5")


def test_normalize_rescales_to_exactly_100_within_tolerance():
    weights = normalize_weights({"math": 1, "rai": 1, "chat": 1})
    assert weights == {"math": 33.34, "rai": 33.33, "chat": 33.33} or math.isclose(sum(weights.values()), 100)
    assert abs(sum(weights.values()) - 100) <= 0.01
    mix = MixConfig.normalized(40, {"math": 3, "rai": 1})
    assert mix.category_weights == {"math": 75.0, "rai": 25.0}
    assert MixConfig.normalized(100, {"math": 3}) == MixConfig.customer_only()
    with pytest.raises(MixError, match="no category has a positive weight"):
        normalize_weights({"math": 0})


def test_json_round_trip_and_variations(tmp_path):
    mix = MixConfig(60, {"reasoning-instruction-following": 70, "rai": 30})
    assert MixConfig.from_json(mix.to_json()) == mix
    assert MixConfig.load(mix.save(tmp_path / "mix.json")) == mix
    assert mix.with_customer_percent(80).category_weights == mix.category_weights
    assert not mix.with_customer_percent(100).mixing
    assert MixConfig.customer_only().with_customer_percent(50).mixing
    assert mix.restricted_to(["rai"]).category_weights == {"rai": 100.0}
    with pytest.raises(MixError, match="none of the mix's categories"):
        mix.restricted_to(["math"])
    assert hash(mix) == hash(MixConfig.from_dict(mix.to_dict()))


# ---------------------------------------------------------------------------------------------------------------
# The sampler


def test_a_50_50_mix_puts_exactly_half_of_every_batch_from_the_customer():
    mix = MixConfig(50, {"reasoning-instruction-following": 50, "rai": 25, "chat": 25})
    order = mixed_order(mix, 40, {"chat": 7, "rai": 5, "reasoning-instruction-following": 9}, 8, seed=3)
    for step in range(200):
        rows = order.rows(step)
        sources = [order.source_of(r) for r in rows]
        assert len(rows) == 8
        assert sources.count(CUSTOMER) == 4
        assert sources.count("reasoning-instruction-following") == 2
        assert sources.count("rai") == 1 and sources.count("chat") == 1
    realized = order.realized(200)
    assert realized["sources"][CUSTOMER]["realized_percent"] == 50.0
    assert realized["sources"]["rai"]["per_batch_min"] == realized["sources"]["rai"]["per_batch_max"] == 1
    assert realized["max_deviation_rows"] == 0


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(CATEGORIES), st.floats(0.01, 100), min_size=1, max_size=8),
       st.floats(0, 99), st.sampled_from([1, 3, 8, 16]), st.integers(1, 40))
def test_every_source_stays_within_one_row_of_its_share_at_every_step(weights, customer, batch, steps):
    mix = MixConfig.normalized(round(customer, 2), weights)
    order = mixed_order(mix, 10, {c: 3 for c in mix.category_weights}, batch, seed=0)
    shares = exact_shares(mix.effective_shares())
    for step in range(steps):
        counts = order.counts(step)
        assert sum(counts) == batch and min(counts) >= 0
        cumulative = order.cumulative(step + 1)
        for name, count in zip(order.names, cumulative):
            target = shares.get(name, 0) * (step + 1) * batch
            assert math.floor(target) <= count <= math.ceil(target)


def test_rows_are_a_function_of_seed_and_step_and_cycle_through_each_source():
    mix = MixConfig(50, {"rai": 100})
    a = mixed_order(mix, 6, {"rai": 4}, 4, seed=1)
    b = mixed_order(mix, 6, {"rai": 4}, 4, seed=1)
    assert [a.rows(s) for s in range(10)] == [b.rows(s) for s in reversed(range(10))][::-1]
    first_epoch = [r for s in range(3) for r in a.rows(s) if a.source_of(r) == CUSTOMER]
    assert sorted(first_epoch) == list(range(6))  # every customer row once before any repeats
    assert a.epoch(3) == 1.0
    assert mixed_order(mix, 6, {"rai": 4}, 4, seed=2).rows(0) != a.rows(0) or \
        mixed_order(mix, 6, {"rai": 4}, 4, seed=2).rows(1) != a.rows(1)


def test_a_category_with_weight_but_no_rows_is_an_error():
    mix = MixConfig(50, {"rai": 50, "math": 50})
    with pytest.raises(MixError, match="math"):
        mixed_order(mix, 10, {"rai": 5}, 4, 0)
    with pytest.raises(MixError, match="no rows"):
        MixedBatchOrder(["customer", "rai"], [10, 0], {"customer": 0.5, "rai": 0.5}, 4, 0)


# ---------------------------------------------------------------------------------------------------------------
# Registry


def test_registry_reads_alpaca_gsm8k_and_c4_from_shared_data(tmp_path):
    registry = GeneralDataRegistry()
    registry.add("instruction-following", shared_file("alpaca-5k/alpaca_5000.json"), limit=50)
    registry.add("math", shared_file("gsm8k/train.jsonl"), limit=30)
    registry.add("baseline", shared_file("c4-demo/c4_demo.jsonl"), limit=20)
    assert registry.categories == ["baseline", "math", "instruction-following"]
    mix = MixConfig(50, {"instruction-following": 50, "math": 30, "baseline": 20})
    files = registry.write(tmp_path / "general", mix)
    assert set(files) == set(mix.category_weights)
    rows = {c: [json.loads(line) for line in open(path)] for c, path in files.items()}
    assert len(rows["instruction-following"]) == 50 and len(rows["math"]) == 30 and len(rows["baseline"]) == 20
    math_answer = rows["math"][0]["messages"][1]["content"]
    assert "<<" not in math_answer and "The answer is" in math_answer and "####" not in math_answer
    assert rows["baseline"][0]["messages"][0]["content"].startswith("Continue the text:")
    assert all(r["messages"][1]["content"].strip() for rs in rows.values() for r in rs)
    sources = json.loads((tmp_path / "general" / "sources.json").read_text())
    assert sources["math"]["sources"][0]["schema"] == "gsm8k"
    extra = mixing_extra(mix, files)
    assert extra["mix"] == mix.to_dict() and set(extra["general_data"]) == set(files)


def test_registry_errors_name_the_problem(tmp_path):
    registry = GeneralDataRegistry()
    with pytest.raises(MixError, match="did you mean 'instruction-following'"):
        registry.add("instruction_following", tmp_path / "x.jsonl")
    with pytest.raises(DataError, match="file not found"):
        registry.add("math", tmp_path / "missing.jsonl")
    odd = tmp_path / "odd.csv"
    odd.write_text("prompt_text,label\nhi,there\n")
    registry.add("chat", odd)
    with pytest.raises(DataError, match="give question= and answer= columns"):
        registry.write(tmp_path / "out", MixConfig(50, {"chat": 100}))
    fixed = GeneralDataRegistry()
    fixed.add("chat", odd, question="prompt_text", answer="label")
    path = fixed.write(tmp_path / "out2", MixConfig(50, {"chat": 100}))["chat"]
    assert json.loads(open(path).readline())["messages"][1]["content"] == "there"
    wrong = GeneralDataRegistry()
    wrong.add("chat", odd, question="prompt", answer="label")
    with pytest.raises(DataError, match="did you mean 'prompt_text'"):
        wrong.write(tmp_path / "out3", MixConfig(50, {"chat": 100}))
    with pytest.raises(MixError, match="which no source serves"):
        fixed.write(tmp_path / "out4", MixConfig(50, {"chat": 50, "math": 50}))
    with pytest.raises(MixError, match="no general data file for math"):
        mixing_extra(MixConfig(50, {"math": 100}), {"chat": path})


def test_hub_ids_need_a_reachable_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    registry = GeneralDataRegistry()
    registry.add("chat", "hf://datasets/someone/some-data/train.jsonl")
    with pytest.raises(DataError, match="cannot fetch it from the Hugging Face hub"):
        registry.write(tmp_path, MixConfig(50, {"chat": 100}))
    malformed = GeneralDataRegistry()
    malformed.add("chat", "hf://someone/x")
    with pytest.raises(DataError, match="hf://datasets/<org>/<name>"):
        malformed.load("chat")


def test_schema_detection_and_text_rows():
    assert detect_schema(["instruction", "input", "output"]) == "alpaca"
    assert detect_schema(["question", "answer"], "so 3 #### 3") == "gsm8k"
    assert detect_schema(["question", "answer"], "Paris") == "qa"
    assert detect_schema(["messages"]) == "chat"
    assert detect_schema(["prompt", "completion"]) == "prompt_response"
    assert detect_schema(["text"]) == "text"
    assert detect_schema(["foo"]) is None
    assert _gsm8k_answer("4 + 4 = <<4+4=8>>8 apples\n#### 8") == "4 + 4 = 8 apples\nThe answer is 8."
    assert text_to_chat("too short") is None
    prompt, tail = text_to_chat(" ".join(f"w{i}." for i in range(200)))
    assert prompt.startswith("Continue the text:") and tail and tail.split()[0] not in prompt.split()


# ---------------------------------------------------------------------------------------------------------------
# Rehearsal


def test_built_in_prompts_cover_every_category_and_hold_some_out():
    train, probe = rehearsal_prompts(), rehearsal_prompts(split="probe")
    assert {p["category"] for p in train} == set(CATEGORIES) == {p["category"] for p in probe}
    assert not {p["id"] for p in train} & {p["id"] for p in probe}
    assert len(rehearsal_prompts(["math"], per_category=2)) == 2
    with pytest.raises(MixError, match="did you mean"):
        rehearsal_prompts(["maths"])


def test_cut_replies_end_at_a_full_sentence():
    assert complete_reply("All good. Then more", truncated=False) == "All good. Then more"
    assert complete_reply("First sentence is long enough. Then a cut", truncated=True) == \
        "First sentence is long enough."
    assert complete_reply("A. then a much longer piece that never ends", truncated=True) == \
        "A. then a much longer piece that never ends"
    assert complete_reply("   ", truncated=True) is None


@pytest.fixture
def fake_generation(monkeypatch, tmp_path):
    """generate_replies replaced by an echo that counts what it was asked; the cache in tmp_path."""
    import nbtoolkit.generation as generation
    from nbtoolkit.generation import Generation

    asked: list[str] = []

    def echo(loaded, conversations, **_):
        asked.extend(c[-1]["content"] for c in conversations)
        return [Generation(f"Reply to: {c[-1]['content'][:20]}.", 5, False) for c in conversations]

    monkeypatch.setattr(generation, "generate_replies", echo)
    monkeypatch.setattr(rehearsal_module, "rehearsal_cache_dir", lambda: tmp_path / "rehearsal")
    return asked


def test_rehearsal_is_cached_per_model_and_prompt(fake_generation):
    from nbtoolkit.models import tiny_model

    model = tiny_model(seed=0, vocab_from=None)
    first = synthesize_rehearsal(model, categories=["math", "rai"], per_category=2, progress=False)
    assert len(first) == 4 and len(fake_generation) == 4
    assert first[0]["messages"][1]["content"].startswith("Reply to:")
    again = synthesize_rehearsal(model, categories=["math", "rai", "chat"], per_category=2, progress=False)
    assert len(again) == 6 and len(fake_generation) == 6  # only the two chat prompts were new
    other = tiny_model(seed=1, vocab_from=None)
    synthesize_rehearsal(other, categories=["math"], per_category=2, progress=False)
    assert len(fake_generation) == 8  # other weights, other cache


def test_registry_serves_rehearsal_for_categories_without_files(fake_generation, tmp_path):
    from nbtoolkit.models import tiny_model

    registry = GeneralDataRegistry()
    registry.add_rehearsal(tiny_model(seed=0, vocab_from=None), per_category=3)
    mix = MixConfig(50, {"reasoning-instruction-following": 60, "rai": 20, "chat": 20})
    files = registry.write(tmp_path / "general", mix)
    assert len(fake_generation) == 9  # one generation batch for the three categories
    assert all(sum(1 for _ in open(p)) == 3 for p in files.values())
    assert "rehearsal" in registry.describe().loc["rai", "sources"]


def test_rehearsal_on_the_prompts_of_a_public_file(fake_generation, tmp_path):
    from nbtoolkit.models import tiny_model

    registry = GeneralDataRegistry()
    alpaca = shared_file("alpaca-5k/alpaca_5000.json")
    with pytest.raises(MixError, match="add_rehearsal"):
        registry.add_rehearsal_prompts("reasoning-instruction-following", alpaca, limit=5)
    registry.add_rehearsal(tiny_model(seed=0, vocab_from=None), categories=["rai"], per_category=1)
    assert registry.add_rehearsal_prompts("reasoning-instruction-following", alpaca, limit=5, seed=1) == 5
    files = registry.write(tmp_path / "general", MixConfig(50, {"reasoning-instruction-following": 80, "rai": 20}))
    rows = [json.loads(line) for line in open(files["reasoning-instruction-following"])]
    assert len(rows) == 6 and len(fake_generation) == 7  # 1 built-in prompt each + the 5 file prompts
    assert sum(r["id"].startswith("reasoning-instruction-following-x") for r in rows) == 5


def test_a_model_that_says_nothing_gives_a_clear_error(monkeypatch, tmp_path):
    from nbtoolkit.models import tiny_model

    monkeypatch.setattr(rehearsal_module, "rehearsal_cache_dir", lambda: tmp_path)
    with pytest.raises(MixError, match="gave no usable reply"):
        synthesize_rehearsal(tiny_model(seed=0, vocab_from=None), categories=["chat"], per_category=1,
                             max_new_tokens=4, progress=False)


@pytest.mark.slow
def test_the_embedded_model_rehearses_offline(monkeypatch, tmp_path):
    monkeypatch.setattr(rehearsal_module, "rehearsal_cache_dir", lambda: tmp_path)
    records = synthesize_rehearsal(categories=["math", "chat"], per_category=1, max_new_tokens=24, progress=False)
    assert len(records) == 2
    assert all(len(r["messages"][1]["content"]) > 5 for r in records)
    assert list(tmp_path.glob("*/replies.jsonl"))

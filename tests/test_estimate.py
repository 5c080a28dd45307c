"""Estimates: range arithmetic, token counts from a prepared file, the rate cache and its refinement by finished
jobs, calibration, and SageMaker prices (Price List API through botocore Stubber, and the shipped table)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from nbtoolkit.estimate import Estimate, Rate
from nbtoolkit.estimate import cloud, local, rates
from nbtoolkit.estimate.core import duration_range
from nbtoolkit.estimate.tokens import token_stats
from nbtoolkit.runtime import JobSpec
from nbtoolkit.runtime.events import write_json_atomic
from nbtoolkit.training.config import EvalConfig, RFTLoraConfig, SFTFullConfig, SFTLoraConfig

LABELS = ("HQ", "LQ_EDIT", "LQ_CLOSE")


def chat_rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "Answer with the label only."},
                          {"role": "user", "content": f"How do I sort list number {i} in Python? " * (1 + i % 6)},
                          {"role": "assistant", "content": LABELS[i % 3]}]} for i in range(n)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("NBTOOLKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / rates.CACHE_FILE


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    from nbtoolkit.models import tiny_model

    return str(tiny_model(seed=0, vocab_from=None).save(tmp_path_factory.mktemp("model") / "tiny"))


# ---------------------------------------------------------------------------------------------------------------
# Ranges


def test_a_rate_range_gives_a_time_range_with_the_fixed_seconds_on_both_ends():
    rate = Rate(100.0, 200.0, "training tokens", overhead_seconds=10.0, source="calibrated")
    estimate = Estimate.from_rate("sft", 2000.0, rate, extra_seconds=5.0)
    # the rate spreads 1/3 either way of its middle, and so do the 10 fixed seconds measured with it
    assert estimate.low_seconds == pytest.approx(10 * 2 / 3 + 5 + 2000 / 200)
    assert estimate.high_seconds == pytest.approx(10 * 4 / 3 + 5 + 2000 / 100)
    assert estimate.contains(30.0) and not estimate.contains(39.0)
    assert "calibrated" in estimate.line() and "2k training tokens" in estimate.line()
    with pytest.raises(ValueError, match="low <= high"):
        Rate(2.0, 1.0, "tokens")


def test_jobs_in_a_row_add_up_and_jobs_side_by_side_never_beat_the_longest():
    a = Estimate("a", 100.0, 200.0, low_usd=1.0, high_usd=2.0)
    b = Estimate("b", 300.0, 400.0, low_usd=3.0, high_usd=4.0)
    row = Estimate.in_sequence("plan", [a, b])
    assert (row.low_seconds, row.high_seconds, row.low_usd, row.high_usd) == (400.0, 600.0, 4.0, 6.0)
    both = Estimate.side_by_side("sweep", [a, b], at_once=2)
    assert both.low_seconds == 300.0 and both.high_seconds == 600.0  # the longest job; no gain at worst
    assert Estimate.from_dict(row.to_dict()) == row
    assert Estimate.in_sequence("plan", [a, Estimate("c", 1.0, 2.0)]).low_usd is None  # one part unpriced


def test_durations_read_as_people_say_them():
    assert duration_range(45, 60) == "45-60 s"
    assert duration_range(12 * 60, 17 * 60) == "12-17 min"
    assert duration_range(50, 150) == "50 s - 2 min"


# ---------------------------------------------------------------------------------------------------------------
# Tokens


def test_token_counts_follow_the_length_cuts_the_trainer_applies(tmp_path):
    from nbtoolkit.models import answer_terminator_ids, tiny_tokenizer
    from nbtoolkit.training.sft import tokenize_chat

    tokenizer = tiny_tokenizer()
    path = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))
    stats = token_stats(path, tokenizer, tokenizer_name="tiny")
    assert stats.rows == 24 and stats.sampled == 24
    terminator = answer_terminator_ids(tokenizer)
    for max_length, max_prompt in ((1024, None), (1024, 24), (560, 24)):
        real = [tokenize_chat(r["messages"], tokenizer, max_length=max_length, max_prompt_tokens=max_prompt,
                              terminator_ids=terminator).length for r in chat_rows(24)]
        counted = stats.sequence_lengths(max_length, max_prompt)
        assert abs(counted.mean() - sum(real) / len(real)) <= 0.02 * sum(real) / len(real), (max_length, max_prompt)
    assert stats.mean_sequence(1024, 24) < stats.mean_sequence(1024, None)
    assert token_stats(path, tokenizer, tokenizer_name="tiny") is stats  # cached per file and tokenizer


def test_a_big_file_is_sampled_and_its_tokenizing_time_scaled(tmp_path):
    from nbtoolkit.models import tiny_tokenizer

    path = write_jsonl(tmp_path / "chat.jsonl", chat_rows(60))
    stats = token_stats(path, tiny_tokenizer(), tokenizer_name="tiny", sample=20)
    assert (stats.rows, stats.sampled) == (60, 20)
    assert stats.tokenize_seconds == pytest.approx(stats.seconds * 3)


# ---------------------------------------------------------------------------------------------------------------
# Rates: cache, recorded jobs, prior


def _sft_spec(model: str, train: Path, **overrides) -> JobSpec:
    config = SFTLoraConfig.for_platform("local", **{"max_steps": 10, "warmup_steps": 1, "save_steps": 5,
                                                    "global_batch_size": 4, "micro_batch_size": 4,
                                                    "max_length": 640, "max_prompt_tokens": 48, **overrides})
    return JobSpec("sft_lora", config, model=model, train_file=str(train), labels=LABELS, name="sft")


def test_calibration_is_cached_per_machine_model_method_and_plan(tmp_path, cache, tiny_dir, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    calls = []

    def fake_calibration(spec, data_file, work_of, **_):
        calls.append(spec.config.micro_batch_size)
        return {"rate": 500.0, "overhead_seconds": 12.0, "seconds": 20.0, "when": "2026-12-05T08:00:00+00:00",
                "run_dir": None}

    monkeypatch.setattr(local, "run_calibration", fake_calibration)
    spec = _sft_spec(tiny_dir, train)
    first = local.estimate_spec(spec, calibrate=True)
    again = local.estimate_spec(spec, calibrate=True)
    assert calls == [4] and first.estimate == again.estimate  # the second estimate read the cache
    assert "calibrated on this machine 2026-12-05" in first.estimate.source
    stored = json.loads(cache.read_text())["rates"]
    assert list(stored) == [first.key] and rates.machine_id() in first.key and "sft_lora/mb4x1" in first.key
    tokens = first.work.busy
    assert first.estimate.low_seconds == pytest.approx(12.0 * 0.8 + tokens / 600.0 + first.work.extra_seconds)
    assert first.estimate.high_seconds == pytest.approx(12.0 * 1.2 + tokens / 400.0 + first.work.extra_seconds)
    # another batch shape is another rate: it calibrates again
    local.estimate_spec(_sft_spec(tiny_dir, train, micro_batch_size=2), calibrate=True)
    assert calls == [4, 2]


def test_full_fine_tuning_with_frozen_layers_has_its_own_rate():
    every = SFTFullConfig.for_platform("local")
    frozen = every.with_overrides(frozen_layers=20)
    assert rates.method_id("sft_full", every) == "sft_full/mb8x1"
    assert rates.method_id("sft_full", frozen) == "sft_full/mb8x1/frozen20"  # less backward: another token cost
    small, _ = rates.calibration_spec(JobSpec("sft_full", frozen, model="m", train_file="t"))
    assert rates.method_id("sft_full", small.config) == rates.method_id("sft_full", frozen)


def test_without_a_rate_the_estimate_says_how_to_get_one(tmp_path, cache, tiny_dir):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    found = local.estimate_spec(_sft_spec(tiny_dir, train))
    assert found.estimate is None and "calibrate" in found.message
    assert found.work.busy > 0  # the work is still counted, so a launch records it
    with pytest.raises(ValueError, match="no rate for this machine"):
        local.estimate_job(_sft_spec(tiny_dir, train))


def test_the_shipped_prior_is_labelled_and_wide(cache, tiny_dir):
    rate = rates.prior_rate("sft_full", "smollm2-135m-instruct")
    assert rate is not None and rate.kind == "prior" and "not this machine" in rate.source
    assert rate.high / rate.low > 4  # an unmeasured machine: a wide range
    assert rates.prior_rate("sft_full", tiny_dir) is None  # measured for the embedded model only


def test_finished_jobs_refine_the_rate(tmp_path, cache, tiny_dir, monkeypatch):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    spec = _sft_spec(tiny_dir, train)
    rates.store_calibration(local.estimate_spec(spec).key, {"rate": 100.0, "overhead_seconds": 5.0, "seconds": 9.0,
                                                             "when": "2026-12-01"})
    found = local.estimate_spec(spec)
    runs = tmp_path / "runs"
    for name, tokens_per_second, seconds in (("a", 400.0, 60.0), ("b", 440.0, 58.0)):
        run_dir = runs / name
        run_dir.mkdir(parents=True)
        local.record_launch_estimate(run_dir, found)
        write_json_atomic(run_dir / "result.json", {
            "status": "COMPLETED", "kind": "sft_lora", "seconds": seconds, "ended": "2026-12-05T09:00:00+00:00",
            "output": {"train_seconds": 50.0, "tokens_per_second": tokens_per_second, "steps": 10}})
    refined = local.estimate_spec(spec, runs_dir=runs)
    assert "2 finished jobs on this machine" in refined.estimate.source
    rate = rates.rate_from_entry("sft_lora", rates.cached_entry(refined.key))
    assert rate.low == pytest.approx(400 * (1 - rates.RECORDED_SPREAD))
    assert rate.high == pytest.approx(440 * (1 + rates.RECORDED_SPREAD))
    assert rate.overhead_seconds == pytest.approx(9.0)  # median of 10 and 8 seconds outside the steps
    assert rates.absorb_finished_runs(runs) == 0  # each run counts once
    record = local.estimate_vs_actual(runs / "a")
    assert record["actual_seconds"] == 60.0 and record["low_seconds"] == pytest.approx(found.estimate.low_seconds)


def test_rfts_sampling_before_training_is_timed_at_its_own_rate_not_taken_for_overhead(tmp_path, cache, tiny_dir):
    prompts = write_jsonl(tmp_path / "rft.jsonl", chat_rows(12))
    spec = JobSpec("rft_lora", RFTLoraConfig.for_platform("local", max_steps=4, warmup_steps=0, save_steps=4,
                                                          global_batch_size=4, micro_batch_size=4,
                                                          number_generation=2, max_new_tokens=8),
                   model=tiny_dir, train_file=str(prompts), labels=LABELS)
    rates.store_calibration(local.estimate_spec(spec).key, {"rate": 10.0, "overhead_seconds": 5.0, "seconds": 9.0,
                                                             "when": "2026-12-01"})
    found = local.estimate_spec(spec)
    assert any("sampling before training: not timed" in note for note in found.estimate.notes)
    run_dir = tmp_path / "runs" / "rft"
    run_dir.mkdir(parents=True)
    local.record_launch_estimate(run_dir, found)
    write_json_atomic(run_dir / "result.json", {
        "status": "COMPLETED", "kind": "rft_lora", "seconds": 100.0, "ended": "2026-12-05T09:00:00+00:00",
        "output": {"train_seconds": 60.0, "sampling_seconds": 30.0, "sampled_prompts": 12, "steps": 4}})
    refined = local.estimate_spec(spec, runs_dir=tmp_path / "runs")
    entry = rates.cached_entry(refined.key)["recorded"][0]
    assert entry["overhead_seconds"] == pytest.approx(10.0)  # 100 s - 60 s of steps - 30 s of sampling
    assert entry["sampling_rate"] == pytest.approx(found.work.sampling / 30.0)
    assert any("dynamic sampling): 30 s" in note for note in refined.estimate.notes)
    middle = (refined.estimate.low_seconds + refined.estimate.high_seconds) / 2
    assert middle == pytest.approx(100.0, rel=0.2)


def test_work_per_kind_follows_the_config(tmp_path, cache, tiny_dir):
    from nbtoolkit.models import tiny_tokenizer

    stats = token_stats(write_jsonl(tmp_path / "rows.jsonl", chat_rows(12)), tiny_tokenizer(), tokenizer_name="t")
    rft = JobSpec("rft_lora", RFTLoraConfig.for_platform("local", max_steps=3, warmup_steps=0, save_steps=3,
                                                         global_batch_size=4, micro_batch_size=4, number_generation=2,
                                                         max_new_tokens=8, max_prompt_tokens=48),
                  model=tiny_dir, train_file=stats.path, labels=LABELS)
    assert local.job_work(rft, stats).busy == pytest.approx(3 * 4 * (stats.mean_prompt(48) + 8))
    # before training, the precheck draws every one of the 12 rows (16, capped), or the 4 it is given
    assert local.job_work(rft, stats).sampling == pytest.approx(12 * 2 * (stats.mean_prompt(48) + 8))
    small_precheck = replace(rft, extra={"precheck_prompts": 4})
    assert local.job_work(small_precheck, stats).sampling == pytest.approx(4 * 2 * (stats.mean_prompt(48) + 8))
    evaluation = JobSpec("eval", EvalConfig.for_platform("local", limit=5, max_new_tokens=4),
                         model=tiny_dir, eval_file=stats.path, labels=LABELS)
    assert local.job_work(evaluation, stats).busy == pytest.approx(5 * (stats.mean_prompt(192) + 4))
    full = JobSpec("sft_full", SFTFullConfig.for_platform("local", max_steps=20, warmup_steps=2, save_steps=10),
                   model=tiny_dir, train_file=stats.path)
    assert local.job_work(full, stats).busy == pytest.approx(20 * 8 * stats.mean_sequence(384, 192))


def test_calibration_rows_are_those_of_about_the_mean_length(tmp_path, tiny_dir):
    from nbtoolkit.models import tiny_tokenizer

    rows = chat_rows(12)  # user turns repeat 1..6 times: lengths cycle short to long
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    stats = token_stats(path, tiny_tokenizer(), tokenizer_name="t")
    spec = _sft_spec(tiny_dir, path)
    order = local.typical_rows(spec, stats)
    lengths = stats.sequence_lengths(spec.config.max_length, spec.config.max_prompt_tokens)
    assert sorted(order) == list(range(12))
    distance = abs(lengths - lengths.mean())
    assert distance[order[0]] == distance.min() and distance[order[-1]] == distance.max()
    assert list(distance[order]) == sorted(distance)
    rates._copy_rows(path, tmp_path / "copy.jsonl", order[:3])
    copied = [json.loads(line) for line in (tmp_path / "copy.jsonl").read_text().splitlines()]
    assert copied == [rows[i] for i in order[:3]]
    sampled = token_stats(path, tiny_tokenizer(), tokenizer_name="t", sample=4)
    assert list(sampled.file_rows()) == [0, 3, 7, 11]  # the rows an evenly spaced sample counted


def test_a_rate_measured_on_rows_of_another_length_is_used_only_when_nothing_closer_is_known(tmp_path, cache,
                                                                                             tiny_dir):
    spec = _sft_spec(tiny_dir, write_jsonl(tmp_path / "train.jsonl", chat_rows(12)))
    found = local.estimate_spec(spec, allow_prior=False)
    row_tokens = found.work.row_tokens
    assert found.estimate is None and row_tokens > 0
    rates.store_calibration(found.key, {"rate": 100.0, "overhead_seconds": 5.0, "seconds": 20.0,
                                        "when": "2026-12-01", "row_tokens": 3 * row_tokens})
    other = local.estimate_spec(spec)
    assert any("another length" in note for note in other.estimate.notes)
    assert rates.rate_from_entry("sft_lora", rates.cached_entry(found.key), row_tokens) is None
    rates.store_calibration(found.key, {"rate": 100.0, "overhead_seconds": 5.0, "seconds": 20.0,
                                        "when": "2026-12-01", "row_tokens": 1.1 * row_tokens})
    near = local.estimate_spec(spec)
    assert not any("another length" in note for note in near.estimate.notes)
    assert near.launch_record()["row_tokens"] == pytest.approx(row_tokens)


def test_rft_calibration_times_one_step_of_one_prompt_group_and_samples_a_few_prompts(tmp_path, tiny_dir):
    spec = JobSpec("rft_lora", RFTLoraConfig.for_platform("local", max_steps=20, global_batch_size=8,
                                                          micro_batch_size=2, number_generation=4),
                   model=tiny_dir, train_file=str(tmp_path / "rft.jsonl"), labels=LABELS)
    small, rows = rates.calibration_spec(spec)
    assert (small.config.max_steps, small.config.global_batch_size, small.config.micro_batch_size) == (1, 4, 2)
    assert small.config.dynamic_sampling == rates.CALIBRATION_PROMPTS == rows
    assert small.extra == {"precheck_prompts": rates.CALIBRATION_PROMPTS}
    assert rates.method_id("rft_lora", small.config) == rates.method_id("rft_lora", spec.config)
    defaults = replace(spec, config=RFTLoraConfig.for_platform("local"))  # passes of 8 completions, groups of 4
    small, _ = rates.calibration_spec(defaults)
    assert (small.config.global_batch_size, small.config.micro_batch_size) == (4, 4)  # one group in one pass


def test_rft_with_label_groups_is_estimated_and_calibrated_as_prompts_without_sampling(tmp_path, tiny_dir):
    from nbtoolkit.models import tiny_tokenizer

    config = RFTLoraConfig.for_platform("local", max_steps=20, global_batch_size=64, micro_batch_size=8,
                                        number_generation=4, label_groups=True)
    spec = JobSpec("rft_lora", config, model=tiny_dir, train_file=str(tmp_path / "rft.jsonl"), labels=LABELS)
    sampled = replace(spec, config=replace(config, label_groups=False))
    assert rates.method_id("rft_lora", config) != rates.method_id("rft_lora", sampled.config)
    small, rows = rates.calibration_spec(spec)
    # one forward pass of 8 prompts (32 = 8 groups of 4 in the config's terms)
    assert (small.config.max_steps, small.config.global_batch_size, small.config.micro_batch_size) == (1, 32, 8)
    assert rows == max(rates.CALIBRATION_PROMPTS, 8) and small.config.label_groups
    assert rates.method_id("rft_lora", small.config) == rates.method_id("rft_lora", config)
    stats = token_stats(write_jsonl(tmp_path / "rft.jsonl", chat_rows(24)), tiny_tokenizer(), tokenizer_name="t")
    work = local.job_work(spec, stats)
    assert work.busy == pytest.approx(20 * 16 * stats.mean_prompt(config.max_prompt_tokens))
    assert work.sampling == pytest.approx(16 * 4 * (stats.mean_prompt(config.max_prompt_tokens) + 16))  # precheck


@pytest.mark.slow
def test_a_real_calibration_times_the_job_function_in_a_subprocess(tmp_path, cache, tiny_dir):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    spec = _sft_spec(tiny_dir, train)
    rate = local.calibrate_spec(spec)
    assert rate.kind == "calibrated" and rate.low > 0 and rate.overhead_seconds > 0
    entry = rates.cached_entry(rates.rate_key("sft_lora", spec.config, tiny_dir))
    assert entry["calibrated"]["rows"] == 8  # two steps of one micro batch
    assert local.estimate_job(spec).source.startswith("calibrated on this machine")


# ---------------------------------------------------------------------------------------------------------------
# Cloud prices and hours


def _price_list_product(instance: str, usd: str, component: str = "Training") -> str:
    return json.dumps({
        "product": {"productFamily": "ML Instance", "attributes": {
            "instanceName": instance, "component": component, "regionCode": "us-east-1"}},
        "terms": {"OnDemand": {"SKU.TERM": {"priceDimensions": {"SKU.TERM.DIM": {
            "unit": "Hrs", "pricePerUnit": {"USD": usd}, "description": f"${usd} per {instance} hour"}}}}}})


def test_the_price_list_api_answer_is_parsed_for_training_on_demand():
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    stubber = Stubber(client)
    stubber.add_response("get_products", {"PriceList": [
        _price_list_product("ml.g5.2xlarge", "1.2345", component="Hosting"),
        _price_list_product("ml.g5.2xlarge", "1.6000")], "FormatVersion": "aws_v1"},
        {"ServiceCode": "AmazonSageMaker", "MaxResults": 100,
         "Filters": cloud.price_list_filters("ml.g5.2xlarge", "us-east-1")})
    with stubber:
        price = cloud.instance_price("ml.g5.2xlarge", client=client)
    stubber.assert_no_pending_responses()
    assert price.usd_per_hour == 1.6 and price.source.startswith("AWS Price List API")


def test_without_the_api_the_dated_table_answers_and_says_its_date():
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    stubber = Stubber(client)
    stubber.add_client_error("get_products", "AccessDeniedException", "not allowed")
    with stubber:
        price = cloud.instance_price("ml.p5.48xlarge", client=client)
    table = cloud.price_table()
    assert price.usd_per_hour == table["usd_per_hour"]["ml.p5.48xlarge"]
    assert table["date"] in price.source and "aws.amazon.com" in price.source
    offline = cloud.instance_price("ml.p5en.48xlarge", offline=True)
    assert offline.usd_per_hour is None and offline.source.startswith("not in the shipped table")


def test_cloud_hours_come_from_flops_over_peak_at_a_utilization_range():
    price = cloud.InstancePrice("ml.g5.2xlarge", 2.0, "test table")
    tokens = 1e9
    estimate = cloud.cloud_estimate("sft_full", instance_type="ml.g5.2xlarge", parameters=1e9, tokens=tokens,
                                    price=price, utilization=(0.25, 0.5))
    flops = 6 * 1e9 * tokens
    peak = 70e12  # one A10G
    assert estimate.low_seconds == pytest.approx(cloud.STARTUP_SECONDS[0] + flops / (peak * 0.5))
    assert estimate.high_seconds == pytest.approx(cloud.STARTUP_SECONDS[1] + flops / (peak * 0.25))
    assert estimate.high_usd == pytest.approx(2.0 * estimate.high_seconds / 3600)
    lora = cloud.cloud_estimate("sft_lora", instance_type="ml.g5.2xlarge", parameters=1e9, tokens=tokens,
                                price=price)
    assert lora.high_seconds < cloud.cloud_estimate("sft_full", instance_type="ml.g5.2xlarge", parameters=1e9,
                                                    tokens=tokens, price=price).high_seconds
    with pytest.raises(ValueError, match="parameter count"):
        cloud.cloud_estimate("sft_lora", instance_type="ml.p5.48xlarge", parameters=None, tokens=tokens,
                             price=price)


def test_nova_instance_counts_follow_the_recipes():
    assert cloud.nova_instance_count("nova-lite-2", "sft_lora", "ml.p5.48xlarge") == 1
    assert cloud.nova_instance_count("nova-lite-2", "sft_lora", "ml.p5.48xlarge", 8) == 8
    with pytest.raises(ValueError, match="1, 4, 8, 16, 32"):
        cloud.nova_instance_count("nova-lite-2", "sft_full", "ml.p5.48xlarge", 3)
    with pytest.raises(ValueError, match="does not run on ml.g5.2xlarge"):
        cloud.nova_instance_count("nova-pro", "sft_lora", "ml.g5.2xlarge")
    assert cloud.nova_instance_count("nova-micro", "eval", "ml.p5.48xlarge", 4) == 1


# ---------------------------------------------------------------------------------------------------------------
# Where the decision is made: the dry run, the pipeline


def _seed_rates(specs, model: str, rate: float = 1000.0) -> None:
    for spec in specs:
        rates.store_calibration(rates.rate_key(spec.kind, spec.config, model),
                                {"rate": rate, "overhead_seconds": 10.0, "seconds": 20.0, "when": "2026-12-05"})


def test_cli_pipeline_estimate_only_prints_every_job_and_starts_nothing(tmp_path, cache, tiny_dir, capsys):
    from nbtoolkit.cli import main
    from nbtoolkit.pipeline import PipelineConfig, PipelineData, pipeline_specs

    out = tmp_path / "run"
    args = ["pipeline", "--profile", "tiny", "--model", tiny_dir, "--out", str(out), "--estimate-only",
            "--no-calibrate"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pipeline, tiny profile (6 jobs): unknown" in printed and "no rate for this machine" in printed
    assert not out.exists()

    data = PipelineData(tmp_path / "sft.jsonl", tmp_path / "rft.jsonl", tmp_path / "eval.jsonl", LABELS, [],
                        tmp_path / "validation.jsonl")
    specs = pipeline_specs(PipelineConfig(profile="tiny", model=tiny_dir), data, tiny_dir)
    assert [s.name for s in specs] == ["eval-baseline", "sft", "eval-sft", "rft", "validate-rft", "eval-rft"]
    _seed_rates(specs, tiny_dir)
    assert main(args) == 0
    printed = capsys.readouterr().out
    head = printed.splitlines()[0]
    assert head.startswith("estimate: pipeline, tiny profile (6 jobs): ") and "unknown" not in head
    for name in ("eval-baseline", "'sft'", "eval-sft", "'rft'", "validate-rft", "eval-rft"):
        assert name in printed
    assert "calibrated on this machine 2026-12-05" in printed and not out.exists()


@pytest.mark.slow
def test_the_dry_run_shows_the_estimate_and_a_launched_job_records_it_beside_its_actual(tmp_path, cache, tiny_dir):
    from nbtoolkit.runtime import LocalRuntime

    rows = write_jsonl(tmp_path / "eval.jsonl", chat_rows(8))
    spec = JobSpec("eval", EvalConfig.for_platform("local", limit=8, max_new_tokens=2, batch_size=8,
                                                   max_prompt_tokens=24), model=tiny_dir, eval_file=str(rows),
                   labels=LABELS, name="tiny-eval")
    runtime = LocalRuntime(tmp_path / "runs")
    report = runtime.launch(spec, dry_run=True)
    assert report.ok and report.estimate.estimate is None
    assert "estimate: 8 rows x" in str(report) and "no rate for this machine" in str(report)
    _seed_rates([spec], tiny_dir, rate=50.0)
    report = runtime.launch(spec, dry_run=True)
    assert "calibrated on this machine" in str(report) and "nbt-estimate" in report._repr_html_()
    job = runtime.launch(spec)
    assert local.launch_estimate(job.run_dir) == report.estimate.estimate
    job.wait(progress=False, poll=0.5, timeout=600)
    record = local.estimate_vs_actual(job.run_dir)
    assert record["actual_seconds"] == job.result().seconds and record["error"] is not None
    # the finished job now refines the rate of the next estimate
    assert "1 finished job on this machine" in local.estimate_job(spec, runs_dir=runtime.runs_dir).source


# ---------------------------------------------------------------------------------------------------------------
# The hyperparameter form: an estimate that follows the fields


def _settled(form) -> str:
    assert form.estimate_ready.wait(60), "the estimate never settled"
    return form.estimate.value


def test_the_form_estimate_follows_the_fields_and_calibrates_on_click(tmp_path, cache, tiny_dir, monkeypatch):
    pytest.importorskip("ipywidgets")
    from nbtoolkit.runtime import LocalRuntime
    from nbtoolkit.ui import HyperparameterForm

    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    form = HyperparameterForm("sft_lora", runtime=LocalRuntime(tmp_path / "runs"), monitor=False)
    assert "give the model and the data file" in _settled(form)
    form.model.value = tiny_dir
    form.train_file.value = str(train)
    form.set(max_steps=10, warmup_steps=1, save_steps=5, global_batch_size=4, micro_batch_size=4)
    assert "no rate for this machine" in _settled(form) and "10 steps x 4 rows" in form.estimate.value

    def fake_calibration(spec, data_file, work_of, **_):
        return {"rate": 100.0, "overhead_seconds": 30.0, "seconds": 25.0, "when": "2026-12-05", "run_dir": None}

    monkeypatch.setattr(local, "run_calibration", fake_calibration)
    form.calibrate.click()
    assert "calibrated on this machine 2026-12-05" in _settled(form)
    before = local.estimate_job(form.spec)
    form.fields["max_steps"].value = 40  # what typing into the field does
    text = _settled(form)
    assert "40 steps x 4 rows" in text
    after = local.estimate_job(form.spec)
    # 4x the steps: 3x more tokens at the calibrated 100 tokens/s, whose slow end is 80 tokens/s
    assert after.high_seconds - before.high_seconds == pytest.approx(3 * before.work / 80)
    assert after.headline() in html_unescape(text)
    form.fields["lr"].value = 5.0  # out of bounds: no estimate of an invalid config
    assert _settled(form) == ""


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_the_job_monitor_shows_the_launch_estimate_beside_the_elapsed_time(tmp_path):
    pytest.importorskip("ipywidgets")
    from nbtoolkit.ui import JobMonitor

    class RecordedJob:
        name, run_dir = "sft", tmp_path

        def status(self):
            return "IN_PROGRESS"

        def progress(self):
            return {"phase": "train", "step": 3, "total": 10, "elapsed": 75.0}

        def metrics(self):
            return []

        def logs(self, tail=15):
            return ""

    write_json_atomic(tmp_path / rates.ESTIMATE_FILE, {"estimate": Estimate("sft_lora 'sft'", 240.0, 360.0).to_dict()})
    monitor = JobMonitor(RecordedJob(), start=False)
    assert "estimated 4-6 min, elapsed 1:15" in monitor.progress_text.value
    assert "estimated 4-6 min" in monitor.fallback_html()


def test_a_sweep_estimates_its_grid_and_prints_it_before_it_starts(tmp_path, cache, tiny_dir, capsys):
    from nbtoolkit.sweeps import Sweep

    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    sweep = Sweep(_sft_spec(tiny_dir, train), {"lr": [1e-4, 2e-4], "steps": [10, 20]}, out_dir=tmp_path / "sweep",
                  baseline=False, max_parallel=2)
    assert "unknown" in sweep.estimate().headline() and "no rate for this machine" in str(sweep.estimate())
    _seed_rates(sweep.specs, tiny_dir)
    estimate = sweep.estimate()
    singles = [local.estimate_job(spec) for spec in sweep.specs]
    assert len(estimate.parts) == 4 and estimate.high_seconds == pytest.approx(sum(s.high_seconds for s in singles))
    assert estimate.low_seconds == pytest.approx(sum(s.low_seconds for s in singles) / 2)  # 2 at a time, at best
    assert "2 jobs at a time" in str(estimate)
    sweep._run_all = lambda: None  # only what start() shows before its jobs
    sweep.start()
    sweep.wait(10)
    assert capsys.readouterr().out.startswith("estimate: sweep (4 jobs): ")


def test_a_model_trained_in_a_run_directory_shares_its_base_models_rate(tmp_path, tiny_dir):
    run_dir = tmp_path / "sft-run"
    (run_dir / "model").mkdir(parents=True)
    (run_dir / "model" / "config.json").write_text("{}")
    write_json_atomic(run_dir / "job.json", {"kind": "sft_lora", "model": tiny_dir})
    assert rates.model_id(str(run_dir)) == rates.model_id(tiny_dir)


def test_a_job_spec_is_estimated_on_sagemaker_from_its_data(tmp_path, tiny_dir):
    from nbtoolkit.models import load_tokenizer

    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    spec = _sft_spec(tiny_dir, train)
    estimate = cloud.estimate_cloud_job(spec, instance_type="ml.g5.2xlarge", parameters=1e8, offline=True)
    mean = token_stats(train, load_tokenizer(tiny_dir), tokenizer_name=tiny_dir).mean_sequence(640, 48)
    assert estimate.work == pytest.approx(10 * 4 * mean)
    assert estimate.low_usd == pytest.approx(1.515 * estimate.low_seconds / 3600)
    assert cloud.price_table()["date"] in str(estimate) and "1 x ml.g5.2xlarge" in str(estimate)


def test_an_sft_jobs_checkpoint_checks_on_validation_rows_are_timed_at_the_eval_rate(tmp_path, cache, tiny_dir):
    from dataclasses import replace

    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(16))
    validation = write_jsonl(tmp_path / "validation.jsonl", chat_rows(12))
    plain = _sft_spec(tiny_dir, train)  # 10 steps, a checkpoint every 5
    spec = replace(plain, extra={"validation_file": str(validation), "validation_rows": 6, "validate_from": 0.5})
    _seed_rates([plain], tiny_dir)
    without = local.estimate_job(plain)
    no_eval_rate = local.estimate_job(spec)
    assert no_eval_rate.low_seconds == pytest.approx(without.low_seconds)
    assert "2 checkpoint checks x 6 validation rows: not timed" in str(no_eval_rate)
    eval_config = EvalConfig.for_platform("local", batch_size=4, loglik=False, max_prompt_tokens=48, limit=6,
                                          max_new_tokens=int(token_stats(validation, rates_tokenizer(tiny_dir),
                                                                         tokenizer_name=tiny_dir).answer.max()))
    rates.store_calibration(rates.rate_key("eval", eval_config, tiny_dir),
                            {"rate": 10.0, "overhead_seconds": 1.0, "seconds": 2.0, "when": "2026-12-05"})
    timed = local.estimate_job(spec)
    assert timed.low_seconds > without.low_seconds + 1 and "2 checkpoint checks x 6 validation rows:" in str(timed)


def rates_tokenizer(model: str):
    from nbtoolkit.models import load_tokenizer

    return load_tokenizer(model)

"""Local SFT: answer-only loss masks, the head-only loss, learning, LoRA and full, resume, stop, checkpoints, errors."""

from __future__ import annotations

import json
import random
import threading

import pytest
import torch

from nbtoolkit.errors import ConfigError, DataError, NbtoolkitError
from nbtoolkit.generation import generate_replies
from nbtoolkit.models import answer_terminator_ids, load_model, tiny_model
from nbtoolkit.runtime.events import RunLog, read_metrics
from nbtoolkit.training import checkpoints, sft
from nbtoolkit.training.config import SFTFullConfig, SFTLoraConfig
from nbtoolkit.training.sft import (
    BatchOrder,
    answer_token_loss,
    collate,
    latest_checkpoint,
    MIN_SHARED_PREFIX,
    make_optimizer,
    run_sft,
    shared_prefix_length,
    tokenize_chat,
    train_above,
)

LABEL_OF_WORD = {"apple": "HQ", "river": "LQ_EDIT", "stone": "LQ_CLOSE"}
SYSTEM_PROMPT = "Classify the question as HQ, LQ_EDIT or LQ_CLOSE; answer with the label only."
pytestmark = pytest.mark.filterwarnings("ignore::nbtoolkit.training.config.HyperparameterWarning")
FILLER = ["the", "quick", "fox", "jumps", "over", "lazy", "dog", "what", "is", "hello"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_model(seed=0, vocab_from=None).save(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_model(tiny_dir)


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    """Questions whose label is decided by one keyword among filler words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word = rng.choice(list(LABEL_OF_WORD))
        before = " ".join(rng.choices(FILLER, k=rng.randint(2, 10)))
        after = " ".join(rng.choices(FILLER, k=rng.randint(0, 8)))
        rows.append({"messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"{before} {word} {after}".strip()},
            {"role": "assistant", "content": LABEL_OF_WORD[word]},
        ]})
    return rows


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("data") / "train.jsonl", chat_rows(48))


def lora_config(**overrides) -> SFTLoraConfig:
    values = {"lr": 5e-3, "max_steps": 4, "warmup_steps": 1, "save_steps": 4, "global_batch_size": 8,
              "micro_batch_size": 4, "lora_r": 8, "alpha": 16, "max_length": 96, "max_prompt_tokens": 48}
    return SFTLoraConfig.for_platform("local", **{**values, **overrides})


def full_config(**overrides) -> SFTFullConfig:
    values = {"lr": 5e-3, "max_steps": 4, "warmup_steps": 1, "save_steps": 4, "global_batch_size": 8,
              "micro_batch_size": 8, "max_length": 96, "max_prompt_tokens": 48}
    return SFTFullConfig.for_platform("local", **{**values, **overrides})


def train(config, model_dir, train_file, run_dir, **kwargs) -> dict:
    return run_sft(config, model=model_dir, train_file=train_file, run_dir=run_dir,
                   log=RunLog(run_dir, echo=None), **kwargs)


class StopAfter:
    """A stop flag that turns on after `steps` steps (it is asked once before each step)."""

    def __init__(self, steps: int) -> None:
        self.calls = 0
        self.steps = steps

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls > self.steps


# ---------------------------------------------------------------------------------------------------------------
# Tokenization and masks


def test_loss_mask_covers_exactly_the_answer_and_the_terminator(tiny):
    tokenizer = tiny.tokenizer
    terminator = answer_terminator_ids(tokenizer)
    assert terminator == [tokenizer.pad_token_id]  # pad == eos == terminator: masks must not come from pad ids
    rows = chat_rows(2, seed=3)
    rows[1]["messages"][1]["content"] += " and some more words to make it longer"
    examples = [tokenize_chat(r["messages"], tokenizer, max_length=200, max_prompt_tokens=100) for r in rows]
    batch = collate(examples, tokenizer.pad_token_id)

    for i, (row, example) in enumerate(zip(rows, examples)):
        answer = row["messages"][-1]["content"]
        expected = tokenizer(answer, add_special_tokens=False)["input_ids"] + terminator
        labelled = batch.labels[i][batch.labels[i] != -100].tolist()
        assert labelled == expected
        assert tokenizer.decode(labelled) == answer + "<|im_end|>"
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=False)
        assert tokenizer.decode(example.input_ids[:example.prompt_length]) == prompt
        assert batch.attention_mask[i].sum() == example.length
        assert int(batch.answer_positions[i].sum()) == len(expected)
    short = min(range(2), key=lambda i: examples[i].length)
    assert (batch.labels[short, examples[short].length:] == -100).all()  # padding (same id as eos) is not a target
    assert batch.targets.tolist() == batch.labels[batch.labels != -100].tolist()


def test_long_question_is_cut_and_the_answer_kept(tiny):
    tokenizer = tiny.tokenizer
    messages = [{"role": "user", "content": "the quick brown fox " * 60}, {"role": "assistant", "content": "LQ_EDIT"}]
    within_prompt_budget = tokenize_chat(messages, tokenizer, max_length=400, max_prompt_tokens=20)
    assert not within_prompt_budget.prompt_cut
    assert within_prompt_budget.length < 60
    tight = tokenize_chat(messages, tokenizer, max_length=24, max_prompt_tokens=200)
    assert tight.prompt_cut and tight.length <= 24
    answer = tokenizer.decode(tight.input_ids[tight.prompt_length:])
    assert answer == "LQ_EDIT<|im_end|>"
    assert tokenizer.decode(tight.input_ids[:tight.prompt_length]).endswith("<|im_start|>assistant\n")


def test_head_only_loss_equals_full_logits_masked_loss(tiny):
    from peft import LoraConfig, get_peft_model

    tokenizer = tiny.tokenizer
    examples = [tokenize_chat(r["messages"], tokenizer, max_length=200, max_prompt_tokens=100)
                for r in chat_rows(5, seed=1)]
    assert len({e.length for e in examples}) > 1  # padding in the batch
    batch = collate(examples, tokenizer.pad_token_id)
    assert shared_prefix_length(batch) >= MIN_SHARED_PREFIX  # the shared-prefix path runs
    assert shared_prefix_length(batch) < min(e.prompt_length for e in examples)
    model = tiny.model.eval()
    with torch.no_grad():
        reference = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        for options in ({}, {"share_prefix": False}, {"head_only": False}):
            loss = answer_token_loss(model, batch, **options) / batch.n_answer_tokens
            assert loss.item() == pytest.approx(reference.item(), abs=1e-5), options

    peft_model = get_peft_model(load_model(tiny.path).model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # adapters that change the output
        peft_model.eval()
        reference = peft_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               labels=batch.labels).loss
        head_only = answer_token_loss(peft_model, batch) / batch.n_answer_tokens
    assert abs(reference.item() - tiny.model(input_ids=batch.input_ids, labels=batch.labels).loss.item()) > 1e-3
    assert head_only.item() == pytest.approx(reference.item(), abs=1e-5)


def test_shared_prefix_gives_the_same_gradients(tiny):
    from peft import LoraConfig, get_peft_model

    examples = [tokenize_chat(r["messages"], tiny.tokenizer, max_length=200, max_prompt_tokens=100)
                for r in chat_rows(4, seed=2)]
    batch = collate(examples, tiny.tokenizer.pad_token_id)
    model = get_peft_model(load_model(tiny.path).model, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"]))
    gradients = []
    for share_prefix in (True, False):
        model.zero_grad()
        answer_token_loss(model, batch, share_prefix=share_prefix).backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) == 12
    for name, gradient in gradients[0].items():
        assert torch.allclose(gradient, gradients[1][name], atol=1e-6, rtol=1e-4), name


def test_batch_order_is_a_function_of_seed_and_step():
    lengths = [random.Random(i).randint(10, 90) for i in range(40)]
    first, second = BatchOrder(lengths, 8, seed=5), BatchOrder(lengths, 8, seed=5)
    steps = [first.rows(step) for step in range(20)]  # 4 epochs of 5 steps
    assert [second.rows(step) for step in reversed(range(20))] == list(reversed(steps))
    seen = sorted(row for batch in steps for row in batch)
    assert seen == sorted(list(range(40)) * 4)  # every row once per epoch
    assert steps != [BatchOrder(lengths, 8, seed=6).rows(step) for step in range(20)]
    assert first.epoch(10) == 2.0


# ---------------------------------------------------------------------------------------------------------------
# Training runs


def test_loss_falls_and_the_saved_model_answers(tiny_dir, train_file, tmp_path):
    run_dir = tmp_path / "run"
    config = full_config(max_steps=60, save_steps=30, warmup_steps=3)
    summary = train(config, tiny_dir, train_file, run_dir, eval_file=train_file)

    assert summary["status"] == "completed" and summary["steps"] == 60
    rows = read_metrics(run_dir)
    losses = [row["loss"] for row in rows if "loss" in row]
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.25 * losses[0]
    for key in ("step", "loss", "lr", "tokens_per_second", "seconds_per_step", "epoch", "grad_norm"):
        assert all(row[key] is not None for row in rows if "loss" in row), key
    evals = [row for row in rows if "eval_loss" in row]
    assert [row["step"] for row in evals] == [30, 60]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert summary["eval_loss"] == evals[-1]["eval_loss"]
    assert summary["tokens_per_second"] > 0 and summary["peak_rss_mb"] > 0
    assert json.loads((run_dir / "progress.json").read_text())["step"] == 60
    assert (run_dir / "log.txt").read_text().count("step ") >= 60

    trained = load_model(run_dir / "model")
    records = [json.loads(line) for line in open(train_file)]
    replies = generate_replies(trained, [r["messages"][:-1] for r in records], progress=False)
    well_formed = sum(reply.text in LABEL_OF_WORD.values() and not reply.truncated for reply in replies)
    assert well_formed >= 0.75 * len(records)  # a label, then the terminator
    accuracy = sum(reply.text == r["messages"][-1]["content"] for reply, r in zip(replies, records)) / len(records)
    assert accuracy >= 0.5  # chance is 1/3


def test_lora_run_writes_adapter_and_merged_model(tiny_dir, train_file, tmp_path):
    from peft import PeftModel

    run_dir = tmp_path / "lora"
    summary = train(lora_config(lora_plus_lr_ratio=4.0, lora_dropout=0.1), tiny_dir, train_file, run_dir)
    assert summary["status"] == "completed" and summary["method"] == "sft_lora"
    assert summary["paths"]["adapter"] == str(run_dir / "adapter")
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    assert not list(run_dir.glob(".*tmp*"))

    merged = load_model(run_dir / "model")
    with_adapter = PeftModel.from_pretrained(load_model(tiny_dir).model, run_dir / "adapter").eval()
    base = load_model(tiny_dir).model
    ids = torch.tensor([merged.tokenizer("the quick fox apple")["input_ids"]])
    with torch.no_grad():
        merged_logits, adapter_logits, base_logits = (m(input_ids=ids).logits for m in
                                                      (merged.model, with_adapter, base))
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)  # training changed the model


def test_full_run_writes_model_without_adapter(tiny_dir, train_file, tmp_path):
    run_dir = tmp_path / "full"
    summary = train(full_config(), tiny_dir, train_file, run_dir)
    assert summary["status"] == "completed" and summary["method"] == "sft_full"
    assert summary["paths"]["adapter"] is None and not (run_dir / "adapter").exists()
    trained = load_model(run_dir / "model")
    base = load_model(tiny_dir)
    assert not torch.equal(trained.model.model.embed_tokens.weight, base.model.model.embed_tokens.weight)
    assert trained.tokenizer.chat_template == base.tokenizer.chat_template


def test_frozen_layers_keep_the_other_weights_gradients_and_stop_backward_below_them(tiny):
    examples = [tokenize_chat(r["messages"], tiny.tokenizer, max_length=200, max_prompt_tokens=100)
                for r in chat_rows(4, seed=3)]
    batch = collate(examples, tiny.tokenizer.pad_token_id)
    model = load_model(tiny.path).model
    blocks = model.model.layers
    gradients = {}
    for frozen in (0, 1):
        train_above(model, frozen)
        model.zero_grad(set_to_none=True)
        answer_token_loss(model, batch).backward()
        gradients[frozen] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    frozen_names = {n for n, _ in model.named_parameters()
                    if n.startswith(("model.layers.0.", "model.embed_tokens"))}
    assert frozen_names and not frozen_names & gradients[1].keys()
    assert gradients[1].keys() == gradients[0].keys() - frozen_names - {"lm_head.weight"}
    for name, gradient in gradients[1].items():  # freezing below changes no gradient above
        assert torch.allclose(gradient, gradients[0][name], atol=1e-6, rtol=1e-4), name
    with pytest.raises(ConfigError, match=f"frozen_layers={len(blocks)} .* {len(blocks)} blocks"):
        train_above(model, len(blocks))


def test_a_run_with_frozen_layers_trains_only_the_blocks_above_them(tiny_dir, train_file, tmp_path):
    summary = train(full_config(frozen_layers=1), tiny_dir, train_file, tmp_path / "frozen")
    assert summary["status"] == "completed"
    trained, base = (load_model(path).model.state_dict() for path in (tmp_path / "frozen" / "model", tiny_dir))
    unchanged = {name for name, weight in trained.items() if torch.equal(weight, base[name])}
    assert {n for n in trained if n.startswith(("model.layers.0.", "model.embed_tokens"))} <= unchanged
    assert not any(n.startswith("model.layers.1.") and n.endswith("proj.weight") for n in unchanged)
    log = (tmp_path / "frozen" / "log.txt").read_text()
    assert "full fine-tuning, the lowest 1 blocks frozen" in log


def test_lora_plus_gives_b_matrices_a_larger_learning_rate(tiny):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(tiny.path).model, LoraConfig(r=4, target_modules=["q_proj"]))
    optimizer = make_optimizer(model, lora_config(lr=1e-3, lora_plus_lr_ratio=8.0))
    names = {id(p): n for n, p in model.named_parameters()}
    rates = {names[id(p)]: group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates and all(rate == pytest.approx(8e-3 if "lora_B" in name else 1e-3) for name, rate in rates.items())
    plain = make_optimizer(model, lora_config(lr=1e-3))
    assert {group["lr"] for group in plain.param_groups} == {1e-3}
    assert optimizer.defaults["fused"] and plain.defaults["fused"]  # one kernel per step on a CPU


def test_stopped_and_resumed_run_equals_an_uninterrupted_run(tiny_dir, train_file, tmp_path):
    # Dropout and gradient accumulation make the RNG state and the data position matter.
    config = lora_config(max_steps=6, save_steps=2, lora_dropout=0.1, micro_batch_size=4)
    straight = train(config, tiny_dir, train_file, tmp_path / "straight")
    assert [p.name for p in sorted((tmp_path / "straight" / "checkpoints").iterdir())] == ["step-4", "step-6"]

    resumable = config.with_overrides(save_steps=6)
    stopped = train(resumable, tiny_dir, train_file, tmp_path / "split", stop_event=StopAfter(3))
    assert stopped["status"] == "stopped" and stopped["steps"] == 3
    assert stopped["paths"]["checkpoint"] == str(tmp_path / "split" / "checkpoints" / "step-3")
    assert not (tmp_path / "split" / "model").exists()
    resumed = train(resumable, tiny_dir, train_file, tmp_path / "split", resume=True)
    assert resumed["status"] == "completed" and resumed["steps"] == 6

    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], abs=1e-5)
    straight_losses = [r["loss"] for r in read_metrics(tmp_path / "straight") if "loss" in r]
    split_losses = [r["loss"] for r in read_metrics(tmp_path / "split") if "loss" in r]
    assert split_losses == pytest.approx(straight_losses, abs=1e-5)
    a, b = (load_model(tmp_path / name / "model").model.state_dict() for name in ("straight", "split"))
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)
    different_seed = train(config.with_overrides(seed=1), tiny_dir, train_file, tmp_path / "other")
    assert different_seed["final_loss"] != pytest.approx(straight["final_loss"], abs=1e-5)


def test_micro_batches_side_by_side_train_like_one_after_the_other(tiny_dir, train_file, tmp_path, monkeypatch):
    import threading

    import nbtoolkit.training.sft as sft

    threads = []
    loss = sft.answer_token_loss

    def recording_loss(*args, **kwargs):
        threads.append((threading.current_thread().name, torch.get_num_threads()))
        return loss(*args, **kwargs)

    monkeypatch.setattr(sft, "answer_token_loss", recording_loss)
    config = lora_config(max_steps=3, save_steps=3, micro_batch_size=4)
    one_by_one = train(config, tiny_dir, train_file, tmp_path / "serial")
    assert all(not name.startswith("micro-batch") for name, _ in threads)
    threads.clear()
    torch.set_num_threads(2)
    try:
        side_by_side = train(config.with_overrides(parallel_micro_batches=2), tiny_dir, train_file,
                             tmp_path / "parallel")
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(1)
    workers = [(name, n) for name, n in threads if name != "MainThread"]  # MainThread: the loss-mode check
    assert len(workers) == 6 and all(name.startswith("micro-batch") and n == 1 for name, n in workers)

    serial_losses = [r["loss"] for r in read_metrics(tmp_path / "serial") if "loss" in r]
    parallel_losses = [r["loss"] for r in read_metrics(tmp_path / "parallel") if "loss" in r]
    # only the order in which the two micro batches' gradients are added differs: float rounding
    assert parallel_losses == pytest.approx(serial_losses, rel=1e-4)
    base, a, b = (load_model(path).model.state_dict() for path in (tiny_dir, tmp_path / "serial" / "model",
                                                                  tmp_path / "parallel" / "model"))
    moved = sum(float((a[key] - base[key]).norm() ** 2) for key in a) ** 0.5
    apart = sum(float((a[key] - b[key]).norm() ** 2) for key in a) ** 0.5
    assert apart < 0.01 * moved, (apart, moved)  # Adam can turn rounding into an lr-sized step on a ~0 gradient
    assert side_by_side["final_loss"] == pytest.approx(one_by_one["final_loss"], rel=1e-4)
    with pytest.raises(ValueError, match="more than the 2 micro batches"):
        config.with_overrides(parallel_micro_batches=3)


def test_stop_event_set_before_the_first_step(tiny_dir, train_file, tmp_path):
    stop = threading.Event()
    stop.set()
    summary = train(lora_config(), tiny_dir, train_file, tmp_path / "run", stop_event=stop)
    assert summary["status"] == "stopped" and summary["steps"] == 0
    assert summary["paths"]["checkpoint"] is None and summary["paths"]["model"] is None


def test_checkpoint_is_atomic(tiny_dir, train_file, tmp_path, monkeypatch):
    written = []
    real_write = checkpoints._write_trainer_state

    def fail_on_second(path, progress):
        if written:
            assert any(path.parent.iterdir())  # the temporary checkpoint held files when it failed
            raise OSError("disk full")
        written.append(progress.step)
        real_write(path, progress)

    monkeypatch.setattr(checkpoints, "_write_trainer_state", fail_on_second)
    run_dir = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        train(full_config(save_steps=1), tiny_dir, train_file, run_dir)
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-1"]
    assert latest_checkpoint(run_dir) == run_dir / "checkpoints" / "step-1"
    assert not (run_dir / "model").exists()

    monkeypatch.setattr(checkpoints, "_write_trainer_state", real_write)
    leftover = run_dir / "checkpoints" / ".step-9.tmp-crashed"  # from a process killed while writing
    leftover.mkdir()
    (leftover / "optimizer.pt").write_bytes(b"partial")
    with pytest.raises(NbtoolkitError, match="resume=True"):
        train(full_config(save_steps=1), tiny_dir, train_file, run_dir)
    resumed = train(full_config(save_steps=1), tiny_dir, train_file, run_dir, resume=True)
    assert resumed["steps"] == 4 and not leftover.exists()
    assert [p.name for p in sorted((run_dir / "checkpoints").iterdir())] == ["step-3", "step-4"]


# ---------------------------------------------------------------------------------------------------------------
# Bad data

GOOD = {"messages": [{"role": "user", "content": "apple"}, {"role": "assistant", "content": "HQ"}]}
BAD_FILES = {
    "empty": ("", "no rows"),
    "blank lines": ("\n  \n", "no rows"),
    "malformed": (json.dumps(GOOD) + "\n{not json\n", "line 2.*not valid JSON"),
    "not chat": ('{"query": "q", "response": "r"}\n', "row 1.*chat record"),
    "converse": ('{"messages": [{"role": "user", "content": [{"text": "q"}]}]}\n', "Converse"),
    "no answer": (json.dumps({"messages": [{"role": "user", "content": "apple"}]}) + "\n", "no assistant answer"),
    "empty answer": (json.dumps({"messages": [{"role": "user", "content": "apple"},
                                              {"role": "assistant", "content": " "}]}) + "\n", "answer is empty"),
    "answer too long": (json.dumps({"messages": [{"role": "user", "content": "apple"},
                                                 {"role": "assistant", "content": "quick brown fox " * 20}]}) + "\n",
                        "row 1.*does not fit max_length=16"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_training_data_is_a_clear_error(case, tiny_dir, tmp_path):
    text, message = BAD_FILES[case]
    path = tmp_path / "train.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        train(full_config(max_length=16, max_prompt_tokens=8), tiny_dir, path, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_train_file_is_a_data_error(tiny_dir, tmp_path):
    with pytest.raises(DataError, match="file not found"):
        train(full_config(), tiny_dir, tmp_path / "nope.jsonl", tmp_path / "run")


@pytest.mark.slow
def test_loss_mode_check_is_not_fooled_by_bf16_autocast():
    """On a CPU with native bf16 the fast loss must stay on: autocast rounding is not a different computation
    (the real model's bf16 loss differs from its float32 loss by more than the check's tolerance)."""
    from nbtoolkit.training.sft import LossMode, exact_loss_mode, tokenize_chat

    loaded = load_model(dtype="float32")
    system = {"role": "system", "content": "Classify the question as HQ, LQ_EDIT or LQ_CLOSE. " * 3}
    examples = [tokenize_chat([system, {"role": "user", "content": f"Why does loop {i} never end? " * (i + 2)},
                               {"role": "assistant", "content": "LQ_CLOSE"}], loaded.tokenizer, max_length=640,
                              max_prompt_tokens=None)
                for i in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as the trainer runs on such a CPU
        mode = exact_loss_mode(loaded.model, examples, loaded.pad_token_id, "cpu")
    assert mode == LossMode(True, True)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint choice on validation


def _scripted_validation(monkeypatch, scores: list[float]) -> list[int]:
    """Replace the validation scorer by one returning `scores` in turn; returns the steps it was asked at."""
    calls: list[int] = []

    def fake(loaded, validation, **kwargs):
        calls.append(len(calls))
        return {"exact_match": scores[len(calls) - 1], "exact_match_stderr": 0.0, "rows": len(validation.truth),
                "seconds": 0.0}

    monkeypatch.setattr(sft, "validation_accuracy", fake)
    return calls


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("scores, expected_step", [([0.2, 0.6, 0.4, 0.5], 2), ([0.2, 0.3, 0.3, 0.3], 4)])
def test_run_ends_on_the_step_with_the_best_validation_score(scores, expected_step, tiny_dir, train_file, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(checkpoints, "KEEP_CHECKPOINTS", 10)
    _scripted_validation(monkeypatch, scores)
    validation = write_rows(tmp_path / "validation.jsonl", chat_rows(12, seed=9))
    run_dir = tmp_path / "run"
    result = train(full_config(save_steps=1), tiny_dir, train_file, run_dir, labels=list(set(LABEL_OF_WORD.values())),
                   validation_file=validation, validate_from=0.0)

    selection = result["selection"]
    assert selection["selected_step"] == expected_step and selection["split"] == "validation"
    assert selection["by_step"] == {str(step): score for step, score in enumerate(scores, 1)}
    exported = _weights(run_dir / "model" / "model.safetensors")
    chosen = _weights(run_dir / "checkpoints" / f"step-{expected_step}" / "model.safetensors")
    last = _weights(run_dir / "checkpoints" / "step-4" / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(exported[name], chosen[name])
    if expected_step != 4:
        assert not torch.equal(exported[name], last[name])
    rows = [row for row in read_metrics(run_dir) if "validation_exact_match" in row]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]


def test_early_stopping_on_validation(tiny_dir, train_file, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.5, 0.4, 0.3, 0.2])
    validation = write_rows(tmp_path / "validation.jsonl", chat_rows(12, seed=9))
    result = train(full_config(save_steps=1), tiny_dir, train_file, tmp_path / "run", labels=["HQ", "LQ_EDIT", "LQ_CLOSE"],
                   validation_file=validation, validate_from=0.0, early_stopping_patience=2)
    assert result["steps"] == 3 and result["selection"]["selected_step"] == 1


def test_validation_accuracy_scores_greedy_replies(tiny, tmp_path):
    from nbtoolkit.training.selection import load_validation_set, validation_accuracy

    rows = chat_rows(30, seed=4)
    validation = load_validation_set(write_rows(tmp_path / "v.jsonl", rows), ["HQ", "LQ_EDIT", "LQ_CLOSE"],
                                     limit=12)
    assert len(validation.truth) == 12 and validation.rows_total == 30 and validation.sampling == "stratified"
    assert sorted(validation.truth).count("HQ") in (3, 4, 5)
    replies = generate_replies(tiny, validation.conversations, max_new_tokens=4, max_prompt_tokens=None,
                               progress=False)
    expected = sum(r.text == t for r, t in zip(replies, validation.truth)) / 12
    score = validation_accuracy(tiny, validation)
    assert score["rows"] == 12 and score["exact_match"] == pytest.approx(expected)

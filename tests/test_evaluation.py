import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import nbtoolkit.generation as generation
from nbtoolkit.cli import main
from nbtoolkit.data.formats import write_jsonl
from nbtoolkit.errors import DataError
from nbtoolkit.evaluation import (
    EvalResult,
    eval_example,
    evaluate,
    infer_labels,
    label_logprobs,
    load_eval_examples,
)
from nbtoolkit.generation import Generation, encode_prompts, generate_replies
from nbtoolkit.metrics import NO_LABEL
from nbtoolkit.models import answer_terminator_ids, tiny_model
from nbtoolkit.runtime.events import RunLog, read_metrics
from nbtoolkit.training.config import EvalConfig

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]
SYSTEM = "Answer with HQ, LQ_EDIT or LQ_CLOSE."


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0, vocab_from=None)


def gen_qa(queries, references):
    return [{"query": q, "response": r, "system": SYSTEM} for q, r in zip(queries, references)]


# ----------------------------------------------------------------------------------------------- records


def test_eval_example_reads_every_record_format():
    gen = eval_example({"query": "Q?", "response": "HQ", "system": "S"})
    assert gen.conversation == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    assert gen.reference == "HQ" and gen.query == "Q?"
    chat = eval_example({"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "LQ_EDIT"}]})
    assert chat.conversation == [{"role": "user", "content": "Q?"}] and chat.reference == "LQ_EDIT"
    rft = eval_example({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}],
                        "reference_answer": "LQ_CLOSE"})
    assert len(rft.conversation) == 2 and rft.reference == "LQ_CLOSE"
    converse = eval_example({"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "S"}],
                             "messages": [{"role": "user", "content": [{"text": "Q?"}]},
                                          {"role": "assistant", "content": [{"text": "HQ"}]}]})
    assert converse.conversation == gen.conversation and converse.reference == "HQ"


def test_bad_records_name_their_row(tmp_path):
    path = write_jsonl([{"query": "a", "response": "HQ"}, {"messages": [{"role": "user", "content": "x"}]}],
                       tmp_path / "eval.jsonl")
    with pytest.raises(DataError, match="row 2.*end with the assistant"):
        load_eval_examples(path)
    with pytest.raises(DataError, match="no eval records"):
        load_eval_examples([])


def test_infer_labels_only_for_categorical_references():
    assert infer_labels(["HQ", "LQ_EDIT", "HQ", "LQ_CLOSE", "LQ_EDIT", "HQ"]) == ["HQ", "LQ_CLOSE", "LQ_EDIT"]
    assert infer_labels(["Paris is the capital", "Berlin", "Rome, in Italy", "Madrid"]) is None
    long_answer = "a long free text answer that repeats itself"
    assert infer_labels([long_answer, long_answer, "x", "x"]) is None


# ----------------------------------------------------------------------------------------------- log-likelihood


def _slow_label_logprobs(loaded, conversations, labels):
    """One unbatched forward pass per (row, label) pair: the reference the batched version must match."""
    tokenizer = loaded.tokenizer
    terminator = answer_terminator_ids(tokenizer)
    prompts = encode_prompts(tokenizer, conversations, 512)
    out = np.zeros((len(prompts), len(labels)))
    with torch.inference_mode():
        for i, prompt in enumerate(prompts):
            for k, label in enumerate(labels):
                continuation = tokenizer(label, add_special_tokens=False)["input_ids"] + terminator
                logits = loaded.model(torch.tensor([prompt + continuation])).logits[0].float()
                logprobs = torch.log_softmax(logits, dim=-1)
                out[i, k] = sum(logprobs[len(prompt) - 1 + j, token].item() for j, token in enumerate(continuation))
    return out


def test_label_logprobs_match_one_forward_pass_per_pair(tiny):
    # Prompts of different lengths in one batch exercise left padding and the shared-prompt cache.
    conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "why " * (3 * i + 1)}]
                     for i in range(5)]
    fast = label_logprobs(tiny, conversations, LABELS, batch_size=3)
    slow = _slow_label_logprobs(tiny, conversations, LABELS)
    assert fast.shape == (5, 3)
    np.testing.assert_allclose(fast, slow, atol=1e-3)


def test_label_loglik_accuracy_follows_what_the_model_prefers(tiny):
    boosted = tiny.tokenizer("LQ_CLOSE", add_special_tokens=False)["input_ids"] + answer_terminator_ids(
        tiny.tokenizer)
    bias = torch.zeros(len(tiny.tokenizer))
    bias[boosted] = 30.0
    handle = tiny.model.lm_head.register_forward_hook(lambda module, inputs, output: output + bias)
    try:
        references = ["HQ", "LQ_EDIT", "LQ_CLOSE", "LQ_CLOSE"]
        result = evaluate(tiny, gen_qa([f"q{i}" for i in range(4)], references),
                          EvalConfig(max_new_tokens=2, batch_size=2), labels=LABELS, progress=False)
    finally:
        handle.remove()
    assert result.predictions["loglik_label"].tolist() == ["LQ_CLOSE"] * 4
    assert result.predictions["loglik_correct"].tolist() == [False, False, True, True]
    assert result.metrics["loglik_accuracy"] == 0.5


# ----------------------------------------------------------------------------------------------- evaluate


SCRIPT = {  # query -> reply; the query lengths put the rows out of order once sorted by prompt length
    "a much longer question number zero": "HQ",
    "question one, long": "The answer is LQ_EDIT",
    "q two": "LQ_CLOSE",
    "question three that is the longest of all of them": "no idea",
    "q4": "hq.",
    "question five": "LQ_EDIT",
}
REFERENCES = ["HQ", "LQ_EDIT", "HQ", "LQ_CLOSE", "HQ", "LQ_EDIT"]


@pytest.fixture()
def scripted(monkeypatch):
    """generate_replies replaced by a script keyed on the user message, to check scoring and row alignment."""
    calls = []

    def fake(loaded, conversations, *, max_new_tokens, batch_size, max_prompt_tokens, progress, continuations,
             on_batch):
        assert continuations == ()  # loglik is off
        for done in range(batch_size, len(conversations) + batch_size, batch_size):
            on_batch(min(done, len(conversations)), len(conversations))
        calls.append(len(conversations))
        replies = [SCRIPT[c[-1]["content"]] for c in conversations]
        return [Generation(r, len(r.split()), truncated=len(r.split()) >= max_new_tokens) for r in replies]

    monkeypatch.setattr(generation, "generate_replies", fake)
    return calls


def test_evaluate_scores_scripted_replies(tiny, scripted, tmp_path):
    log = RunLog(tmp_path / "run", echo=None)
    result = evaluate(tiny, gen_qa(list(SCRIPT), REFERENCES), EvalConfig(max_new_tokens=4, batch_size=1, loglik=False),
                      log=log, progress=False)
    assert scripted == [6]
    predictions = result.predictions
    assert predictions["reply"].tolist() == list(SCRIPT.values())  # back in data order
    assert predictions["predicted_label"].tolist() == ["HQ", "LQ_EDIT", "LQ_CLOSE", NO_LABEL, "HQ", "LQ_EDIT"]
    assert predictions["correct"].tolist() == [True, True, False, False, True, True]
    assert predictions["reply_chars"].tolist() == [len(r) for r in SCRIPT.values()]
    assert predictions["hit_max_new_tokens"].tolist() == [False, True, False, False, False, False]
    assert list(predictions.columns[:9]) == ["row", "query", "reference", "reply", "predicted_label", "correct",
                                             "reply_tokens", "reply_chars", "hit_max_new_tokens"]
    m = result.metrics
    assert result.labels == ["HQ", "LQ_CLOSE", "LQ_EDIT"]  # inferred from the references
    assert m["n"] == 6 and m["exact_match"] == pytest.approx(2 / 6) and m["quasi_exact_match"] == pytest.approx(3 / 6)
    assert m["label_accuracy"] == pytest.approx(4 / 6) and m["no_valid_prediction"] == 1
    assert m["hit_max_new_tokens"] == 1 and "loglik_accuracy" not in m
    assert result.confusion.loc["HQ", "HQ"] == 2 and result.confusion.loc["HQ", "LQ_CLOSE"] == 1
    assert result.confusion.loc["LQ_CLOSE", NO_LABEL] == 1 and result.confusion.to_numpy().sum() == 6
    assert result.per_class.loc["HQ", "recall"] == pytest.approx(2 / 3)
    assert result.per_class.loc["HQ", "precision"] == 1.0 and result.per_class.loc["LQ_EDIT", "f1"] == 1.0
    rows = read_metrics(tmp_path / "run")
    assert rows[-1]["phase"] == "eval" and rows[-1]["label_accuracy"] == pytest.approx(4 / 6)
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress == {**progress, "phase": "eval", "step": 6, "total": 6}


def test_evaluate_free_text_skips_label_metrics(tiny, scripted, tmp_path):
    references = [f"a free text answer {i}" for i in range(6)]
    result = evaluate(tiny, gen_qa(list(SCRIPT), references), EvalConfig(batch_size=2), run_dir=tmp_path,
                      progress=False)
    assert result.labels is None and result.confusion is None and result.per_class is None
    assert "label_accuracy" not in result.metrics and result.predictions["predicted_label"].isna().all()
    loaded = EvalResult.load(tmp_path)
    assert loaded.confusion is None and loaded.labels is None
    pd.testing.assert_frame_equal(loaded.predictions, result.predictions)


def test_evaluate_real_tiny_model_and_round_trip(tiny, tmp_path):
    references = ["HQ", "LQ_EDIT", "LQ_CLOSE", "HQ", "LQ_EDIT", "LQ_CLOSE", "HQ"]
    queries = [f"question {i} " + "word " * (i % 4) for i in range(7)]
    path = write_jsonl([{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q},
                                      {"role": "assistant", "content": r}]} for q, r in zip(queries, references)],
                       tmp_path / "eval.jsonl")
    config = EvalConfig(max_new_tokens=3, batch_size=2, limit=6)
    result = evaluate(tiny, path, config, labels=LABELS, run_dir=tmp_path / "out", progress=False)
    direct = generate_replies(tiny, [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
                                     for q in queries[:6]], max_new_tokens=3, batch_size=2, progress=False)
    assert result.predictions["reply"].tolist() == [g.text for g in direct]
    assert result.predictions["reply_tokens"].tolist() == [g.n_tokens for g in direct]
    assert result.metrics["n"] == 6 and 0.0 <= result.metrics["loglik_accuracy"] <= 1.0
    assert set(result.predictions["loglik_label"]) <= set(LABELS)
    separately = label_logprobs(tiny, [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
                                       for q in queries[:6]], LABELS)
    assert result.predictions["loglik_label"].tolist() == [LABELS[k] for k in separately.argmax(axis=1)]

    for name in ("metrics.json", "predictions.jsonl", "confusion.csv", "per_class.csv"):
        assert (tmp_path / "out" / name).exists()
    restored = EvalResult.load(tmp_path / "out")
    pd.testing.assert_frame_equal(restored.predictions, result.predictions)
    pd.testing.assert_frame_equal(restored.confusion, result.confusion)
    pd.testing.assert_frame_equal(restored.per_class, result.per_class)
    assert restored.config == config and restored.labels == LABELS and restored.model == tiny.spec.name
    assert restored.metrics.keys() == result.metrics.keys()
    for key, value in result.metrics.items():
        assert (math.isnan(value) and math.isnan(restored.metrics[key])) or restored.metrics[key] == value
    assert "label accuracy" in restored.summary()


def test_cli_evaluate_runs_an_eval_job_and_prints_the_metrics(tiny, tmp_path, capsys):
    references = ["HQ", "LQ_EDIT", "LQ_CLOSE", "HQ", "LQ_EDIT"]
    path = write_jsonl(gen_qa([f"question {i}" for i in range(5)], references), tmp_path / "eval.jsonl")
    model = tiny.save(tmp_path / "model")
    out = tmp_path / "runs"

    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "missing.jsonl"), "--out", str(out),
                 "--dry-run"]) == 1
    assert "FAIL" in capsys.readouterr().out and not out.exists()

    assert main(["evaluate", "--model", str(model), "--data", str(path), "--out", str(out), "--labels",
                 ",".join(LABELS), "--limit", "4", "--max-new-tokens", "3", "--no-loglik"]) == 0
    printed = capsys.readouterr().out
    (run_dir,) = out.iterdir()
    restored = EvalResult.load(run_dir / "eval")
    assert restored.metrics["n"] == 4 and "loglik_accuracy" not in restored.metrics
    assert restored.config == EvalConfig(max_new_tokens=3, limit=4, loglik=False) and restored.labels == LABELS
    direct = evaluate(tiny, path, restored.config, labels=LABELS, progress=False)
    assert restored.predictions["reply"].tolist() == direct.predictions["reply"].tolist()
    assert "label accuracy" in printed and str(run_dir / "eval") in printed

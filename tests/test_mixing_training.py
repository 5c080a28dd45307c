"""SFT on a mix: every batch the trainer sees holds the mix's exact shares and mix.json records it (a mixed job
through LocalRuntime runs in tests/test_sweeps.py)."""

from __future__ import annotations

import json
import random

import pytest

from nbtoolkit.mixing import MIX_FILE, MixConfig, MixError, mixing_extra
from nbtoolkit.models import tiny_model
from nbtoolkit.runtime.events import RunLog
from nbtoolkit.training import sft
from nbtoolkit.training.config import SFTLoraConfig

pytestmark = pytest.mark.filterwarnings("ignore::nbtoolkit.training.config.HyperparameterWarning")
# Each source answers with its own word, so a training example tells where it came from.
SOURCE_ANSWERS = {"customer": "alpha", "reasoning-instruction-following": "bravo", "rai": "charlie",
                  "chat": "delta"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def chat_rows(n: int, answer: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": f"question {rng.randint(0, 999)} about {answer}"},
                          {"role": "assistant", "content": answer}]} for _ in range(n)]


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixdata")
    model = str(tiny_model(seed=0, vocab_from=None).save(root / "model"))
    train = write(root / "train.jsonl", chat_rows(30, SOURCE_ANSWERS["customer"], 0))
    general = {c: write(root / f"{c}.jsonl", chat_rows(7, a, i)) for i, (c, a) in enumerate(SOURCE_ANSWERS.items())
               if c != "customer"}
    return {"model": model, "train": train, "general": general, "root": root}


def config(**overrides) -> SFTLoraConfig:
    values = {"max_steps": 6, "warmup_steps": 1, "save_steps": 3, "global_batch_size": 8, "micro_batch_size": 4,
              "max_length": 64, "max_prompt_tokens": 32, "lr": 1e-3, "mixing": True}
    return SFTLoraConfig.for_platform("local", **{**values, **overrides})


def test_every_training_batch_holds_the_mix_shares(files, tmp_path, monkeypatch):
    """Counts the sources of the examples each optimizer step really trains on."""
    from nbtoolkit.models import load_model

    tokenizer = load_model(files["model"]).tokenizer
    word_of = {tokenizer(a, add_special_tokens=False)["input_ids"][0]: source for source, a in SOURCE_ANSWERS.items()}
    seen: list[list[str]] = []
    real_step = sft._train_step

    def counting_step(net, optimizer, scheduler, trainable, examples, *args, **kwargs):
        seen.append([word_of[e.input_ids[e.prompt_length]] for e in examples])
        return real_step(net, optimizer, scheduler, trainable, examples, *args, **kwargs)

    monkeypatch.setattr(sft, "_train_step", counting_step)
    mix = MixConfig(50, {"reasoning-instruction-following": 50, "rai": 25, "chat": 25})
    summary = sft.run_sft(config(), model=files["model"], train_file=files["train"], run_dir=tmp_path / "run",
                          log=RunLog(tmp_path / "run", echo=None), **mixing_extra(mix, files["general"]))
    assert len(seen) == 6
    for batch in seen:
        assert batch.count("customer") == 4
        assert batch.count("reasoning-instruction-following") == 2
        assert batch.count("rai") == 1 and batch.count("chat") == 1
    assert summary["mix"] == {"customer": 50.0, "chat": 12.5, "rai": 12.5, "reasoning-instruction-following": 25.0}
    recorded = json.loads((tmp_path / "run" / MIX_FILE).read_text())
    assert recorded["realized"]["steps"] == 6 and recorded["realized"]["rows"] == 48
    assert recorded["realized"]["sources"]["customer"]["per_batch_min"] == 4
    assert recorded["nova"]["nova_rai_percent"] == 25
    assert recorded["general_data"]["rai"]["rows"] == 7


def test_resuming_a_mixed_run_keeps_its_batches(files, tmp_path):
    mix = MixConfig(75, {"reasoning-instruction-following": 100})
    extra = mixing_extra(mix, files["general"])
    run = tmp_path / "run"
    sft.run_sft(config(max_steps=3, save_steps=3), model=files["model"], train_file=files["train"], run_dir=run,
                log=RunLog(run, echo=None), **extra)
    summary = sft.run_sft(config(max_steps=6), model=files["model"], train_file=files["train"], run_dir=run,
                          resume=True, log=RunLog(run, echo=None), **extra)
    assert summary["steps"] == 6
    realized = json.loads((run / MIX_FILE).read_text())["realized"]
    assert realized["sources"]["customer"]["rows"] == 36 and realized["max_deviation_rows"] == 0


def test_general_rows_too_long_for_max_length_are_skipped_and_reported(files, tmp_path):
    long_rows = chat_rows(3, "bravo", 1) + [{"messages": [{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": "word " * 200}]}]
    general = {"rai": write(tmp_path / "rai.jsonl", long_rows)}
    run = tmp_path / "run"
    sft.run_sft(config(max_steps=2, save_steps=2), model=files["model"], train_file=files["train"], run_dir=run,
                log=RunLog(run, echo=None), **mixing_extra(MixConfig(50, {"rai": 100}), general))
    assert json.loads((run / MIX_FILE).read_text())["general_data"]["rai"] == {
        "file": general["rai"], "rows": 3, "skipped_too_long": 1}
    assert "1 of 4 rows of rai" in (run / "log.txt").read_text()


def test_a_job_whose_mix_lacks_a_file_fails_with_the_category(files, tmp_path):
    with pytest.raises(MixError, match="'math'"):
        sft.run_sft(config(max_steps=2, save_steps=2), model=files["model"], train_file=files["train"],
                    run_dir=tmp_path / "run", log=RunLog(tmp_path / "run", echo=None),
                    mix=MixConfig(50, {"math": 100}).to_dict(), general_data=files["general"])

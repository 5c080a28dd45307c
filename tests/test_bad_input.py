"""Bad input never crashes or corrupts: one regression test per hostile case, each a clear error or warning."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest

from nbtoolkit.cli import main
from nbtoolkit.data.loaders import load_table
from nbtoolkit.data.mapping import ColumnMapping
from nbtoolkit.data.prepare import PrepareConfig, inspect_labels, prepare_dataset
from nbtoolkit.data.sanitize import find_reserved, rewrite_reserved, sanitize_frame
from nbtoolkit.data.validation import validate_records
from nbtoolkit.errors import ConfigError, DataError, NbtoolkitError
from nbtoolkit.pipeline import PipelineConfig

LABELS = ["HQ", "LQ_EDIT", "LQ_CLOSE"]


def good_csv(path: Path, n: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["question,answer"] + [f"question number {i}?,{LABELS[i % 3]}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def labelled(answers: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"question": [f"q{i}" for i in range(len(answers))], "answer": answers})


def chat_answers(out: Path) -> list[str]:
    lines = (out / "all" / "chat.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["messages"][-1]["content"] for line in lines]


# ------------------------------------------------------------------------------------------------ loaders


def test_a_lone_surrogate_in_jsonl_is_a_data_error_naming_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok", "answer": "HQ"}\n\n{"question": "bad \\ud83d", "answer": "HQ"}\n')
    with pytest.raises(DataError, match="lone surrogate") as caught:
        load_table(path)
    assert (caught.value.row, caught.value.line, caught.value.column) == (2, 3, "question")


def test_a_lone_surrogate_in_a_json_list_is_a_data_error_naming_the_row(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"text": "fine"}, {"text": "x\\udfff"}]')
    with pytest.raises(DataError, match="lone surrogate") as caught:
        load_table(path)
    assert (caught.value.row, caught.value.column) == (2, "text")


def test_a_parquet_index_named_like_a_column_loads_once_or_says_how_to_fix(tmp_path):
    path = tmp_path / "indexed.parquet"
    frame = pd.DataFrame({"Id": [7, 8], "text": ["a", "b"]})
    frame.set_index(pd.Index([7, 8], name="Id")).to_parquet(path)
    assert load_table(path).to_dict("list") == {"Id": [7, 8], "text": ["a", "b"]}
    frame.set_index(pd.Index([1, 2], name="Id")).to_parquet(path)
    with pytest.raises(DataError, match="index=False") as caught:
        load_table(path)
    assert caught.value.column == "Id"


def test_non_utf8_input_reads_with_the_encoding_option_in_the_api_and_the_cli(tmp_path):
    path = tmp_path / "excel.csv"
    rows = ["question,answer"] + [f"caf\u00e9 {i} \u2013 why?,{LABELS[i % 3]}" for i in range(30)]
    path.write_bytes("\n".join(rows).encode("cp1252"))
    with pytest.raises(DataError, match="--encoding cp1252"):
        prepare_dataset(path, PrepareConfig(split=None))
    prepared = prepare_dataset(path, PrepareConfig(split=None, encoding="cp1252"))
    assert prepared.splits["all"]["question"].iloc[0] == "caf\u00e9 0 \u2013 why?"
    out = tmp_path / "out"
    assert main(["prepare", "--data", str(path), "--out", str(out), "--split", "none", "--encoding", "cp1252"]) == 0
    with pytest.raises(ConfigError, match="unknown encoding"):
        PrepareConfig(encoding="no-such-codec")


def test_nul_and_bom_never_reach_the_written_jsonl(tmp_path):
    frame = labelled([LABELS[i % 3] for i in range(30)])
    frame.loc[3, "question"] = "nul\x00 inside"
    frame.loc[4, "question"] = "\ufeffbom first"
    frame.loc[5, "answer"] = "\ufeffHQ"
    prepared = prepare_dataset(frame, PrepareConfig(split=None), out_dir=tmp_path / "out")
    text = (tmp_path / "out" / "all" / "chat.jsonl").read_text(encoding="utf-8")
    assert "\x00" not in text and "\ufeff" not in text and "\\u0000" not in text and "\\ufeff" not in text
    rules = {(c.row, c.rule) for c in prepared.sanitize.changes}
    assert {(4, "control_characters"), (5, "control_characters"), (6, "control_characters")} <= rules
    assert prepared.ok, prepared.summary()


def test_the_validator_refuses_control_characters_in_records_it_is_given():
    report = validate_records([{"text": "a\x00b"}], "cpt")
    assert report.counts() == {"control_character": 1} and not report.ok


def test_out_that_is_a_file_or_under_a_file_is_a_clear_error(tmp_path):
    data = good_csv(tmp_path / "good.csv")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="is a file, not a folder"):
        prepare_dataset(data, PrepareConfig(split=None), out_dir=blocker)
    with pytest.raises(DataError, match="blocker is a file, not a folder"):
        prepare_dataset(data, PrepareConfig(split=None), out_dir=blocker / "sub" / "out")
    assert blocker.read_text() == "not a folder"


def test_a_failing_output_filesystem_is_a_data_error_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import nbtoolkit.data.prepare as prepare_module

    data = good_csv(tmp_path / "good.csv")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out"))

    monkeypatch.setattr(prepare_module.tempfile, "mkdtemp", read_only)
    with pytest.raises(DataError, match="read-only; choose a writable folder"):
        prepare_dataset(data, PrepareConfig(split=None), out_dir=tmp_path / "out")
    monkeypatch.undo()

    def disk_full(records, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(prepare_module, "write_jsonl", disk_full)
    with pytest.raises(DataError, match="the disk is full"):
        prepare_dataset(data, PrepareConfig(split=None), out_dir=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv"]


def test_cli_reports_a_read_only_output_without_a_traceback(tmp_path, capsys, monkeypatch):
    import nbtoolkit.data.prepare as prepare_module

    data = good_csv(tmp_path / "good.csv")

    def read_only(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(prepare_module.tempfile, "mkdtemp", read_only)
    assert main(["prepare", "--data", str(data), "--out", str(tmp_path / "out"), "--split", "none"]) == 2
    err = capsys.readouterr().err
    assert "permission denied; choose a folder you can write to" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ overwrite


def test_overwrite_never_deletes_an_input_inside_the_output_folder(tmp_path, capsys):
    data = good_csv(tmp_path / "sub" / "good.csv")
    before = data.read_bytes()
    assert main(["prepare", "--data", str(data), "--out", str(tmp_path / "sub"), "--overwrite",
                 "--split", "none"]) == 2
    assert "overwriting would delete it" in capsys.readouterr().err
    assert data.read_bytes() == before
    with pytest.raises(DataError, match="holds the input"):
        prepare_dataset(tmp_path / "sub" / "." / "good.csv", PrepareConfig(split=None), out_dir=tmp_path / "sub",
                        overwrite=True)
    assert data.read_bytes() == before


def test_overwrite_replaces_a_previous_output_in_one_swap(tmp_path):
    data = good_csv(tmp_path / "good.csv")
    out = tmp_path / "out"
    prepare_dataset(data, PrepareConfig(split=None), out_dir=out)
    (out / "stale.txt").write_text("from an older run")
    prepare_dataset(data, PrepareConfig(split=None), out_dir=out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.csv", "out"]  # no temp folders left


# ------------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("stray,closest", [
    ("hq", "HQ"), ("LQ-EDIT", "LQ_EDIT"), ("HQ ", None), ("LQ_CLSOE", "LQ_CLOSE"), ("LQ_CL", "LQ_CLOSE"),
])
def test_stray_label_values_are_findings_not_new_classes(stray, closest):
    answers = [LABELS[i % 3] for i in range(30)] + [stray]
    prepared = prepare_dataset(labelled(answers), PrepareConfig(split=None))
    assert prepared.labels == tuple(sorted(LABELS))
    if closest is None:  # surrounding whitespace is not a stray value: it is stripped
        assert prepared.ok and prepared.label_findings == []
        return
    assert [(f.count, f.closest) for f in prepared.label_findings] == [(1, closest)]
    assert not prepared.ok
    summary = prepared.summary()
    assert "inferred labels" in summary and "validation: OK" not in summary
    assert f"closest label: {closest!r}" in summary


def test_control_characters_in_an_answer_are_removed_and_recorded_then_labels_are_clean():
    prepared = prepare_dataset(labelled([LABELS[i % 3] for i in range(30)] + ["HQ\x07"]), PrepareConfig(split=None))
    assert prepared.ok and prepared.labels == tuple(sorted(LABELS))
    assert [(c.row, c.rule) for c in prepared.sanitize.changes] == [(31, "control_characters")]
    labels, findings = inspect_labels(pd.Series(["HQ", "LQ"] * 5 + ["HQ\x07"]))
    assert labels == ("HQ", "LQ") and [(f.reason, f.closest) for f in findings] == [("holds control characters",
                                                                                       "HQ")]


def test_a_value_far_rarer_than_the_others_is_reported_with_its_count():
    labels, findings = inspect_labels(pd.Series(["yes"] * 10 + ["no"] * 10 + ["maybe"]))
    assert labels == ("no", "yes")
    assert [(f.value, f.count) for f in findings] == [("maybe", 1)]


def test_declared_labels_report_strays_with_the_closest_declared_label():
    prepared = prepare_dataset(labelled(["HQ", "LQ_EDIT"] * 10 + ["Hq"]),
                               PrepareConfig(split=None, labels=("HQ", "LQ_EDIT")))
    assert [(f.value, f.closest) for f in prepared.label_findings] == [("Hq", "HQ")]
    problems = prepared.reports["all/chat"].errors
    assert problems and "closest: 'HQ'" in problems[0].message
    assert "inferred labels" not in prepared.summary()


def test_clean_inferred_labels_still_pass():
    prepared = prepare_dataset(labelled([LABELS[i % 3] for i in range(30)]), PrepareConfig(split=None))
    assert prepared.ok and prepared.label_findings == []


# ------------------------------------------------------------------------------------------------ reserved


def test_sanitizer_and_validator_agree_on_markers_glued_to_a_word():
    frame = labelled(["HQ", "LQ_EDIT"] * 10)
    frame.loc[0, "question"] = "currentUser: x and FileSystem: y"
    prepared = prepare_dataset(frame, PrepareConfig(split=None))
    assert prepared.ok, prepared.summary()
    assert prepared.splits["all"]["question"].iloc[0] == "currentUser : x and FileSystem : y"


def test_token_removal_repeats_until_no_reserved_token_is_left():
    assert rewrite_reserved("<im<unk>age> and [E<video>OS] and Us<unk>er: hi") == " and  and User : hi"
    assert find_reserved(rewrite_reserved("<<unk>im<unk>age<unk>>")) == []
    cleaned = sanitize_frame(labelled(["HQ"]).assign(question=["a <im<unk>age> b"]), ["question"])
    assert cleaned.frame["question"].iloc[0] == "a  b"


# ------------------------------------------------------------------------------------------------ answers


def test_answers_are_stripped_before_validation_and_written_stripped(tmp_path):
    answers = [LABELS[i % 3] for i in range(30)]
    answers[:4] = ["HQ ", "HQ\t", "HQ\u00a0", "\u200bHQ\u200b"]
    prepared = prepare_dataset(labelled(answers), PrepareConfig(split=None, labels=tuple(LABELS)),
                               out_dir=tmp_path / "out")
    assert prepared.ok, prepared.summary()
    assert chat_answers(tmp_path / "out")[:4] == ["HQ"] * 4
    rft = (tmp_path / "out" / "all" / "rft.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(rft[2])["reference_answer"] == "HQ"


# ------------------------------------------------------------------------------------------------ mapping


@pytest.mark.parametrize("question,answer", [("text", "label"), ("sentence", "label"), ("prompt", "completion"),
                                             ("Text", "Label")])
def test_common_column_names_map_to_question_and_answer(question, answer):
    frame = pd.DataFrame({question: [f"t{i}" for i in range(20)], answer: ["pos", "neg"] * 10})
    prepared = prepare_dataset(frame, PrepareConfig(split=None))
    assert prepared.mapping.question == (question,) and prepared.mapping.answer == (answer,)
    assert prepared.labels == ("neg", "pos")


def test_an_instruction_keeps_its_input_column():
    frame = pd.DataFrame({"instruction": ["Add", "Sort"] * 5, "input": ["1 2", ""] * 5, "output": ["3", "ok"] * 5})
    prepared = prepare_dataset(frame, PrepareConfig(split=None))
    assert prepared.mapping.question == ("instruction", "input") and prepared.mapping.answer == ("output",)
    assert list(prepared.splits["all"]["question"][:2]) == ["Add\n\n1 2", "Sort"]


def test_an_unmappable_table_fails_with_the_fix_instead_of_dropping_columns(tmp_path, capsys):
    path = tmp_path / "data.csv"
    path.write_text("text,verdict\n" + "".join(f"t{i},{i % 2}\n" for i in range(10)))
    assert main(["prepare", "--data", str(path), "--out", str(tmp_path / "out"), "--split", "none"]) == 2
    err = capsys.readouterr().err
    assert "--question/--answer" in err and "'verdict'" in err
    only_text = pd.DataFrame({"text": ["some text", "more text"]})
    assert prepare_dataset(only_text, PrepareConfig(split=None)).mapping.text == ("text",)


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("kwargs,message", [
    ({"labels": "yes"}, "list of names"),
    ({"labels": ("HQ", " HQ")}, "repeated"),
    ({"seed": "1"}, "seed must be a whole number"),
    ({"seed": 1.5}, "seed must be a whole number"),
    ({"seed": True}, "seed must be a whole number"),
    ({"seed": -1}, "seed must be a whole number"),
    ({"mapping": {"question": "q", "answr": "a"}}, "mapping: unknown mapping field 'answr'"),
    ({"mapping": ["q", "a"]}, "mapping must be a ColumnMapping"),
    ({"html_columns": 3}, "html_columns must be column names"),
])
def test_prepare_config_refuses_bad_arguments_at_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PrepareConfig(**kwargs)


def test_prepare_config_accepts_a_mapping_dict_and_a_single_html_column():
    config = PrepareConfig(mapping={"question": "q", "answer": "a"}, html_columns="Body")
    assert config.mapping == ColumnMapping(question="q", answer="a") and config.html_columns == ("Body",)


@pytest.mark.parametrize("split,message", [("sft-eval-rft", "2 rows cannot be split"), ("holdout", "2 rows are too few")])
def test_too_few_rows_to_split_names_the_file(tmp_path, split, message):
    path = tmp_path / "two.csv"
    path.write_text("question,answer\nq1,a\nq2,b\n")
    with pytest.raises(DataError, match=f"two.csv: {message}"):
        prepare_dataset(path, PrepareConfig(split=split))


def test_repeated_stages_are_refused():
    with pytest.raises(ValueError, match="'sft' is listed twice"):
        PipelineConfig(stages=("baseline", "sft", "sft"))


def test_an_unknown_model_fails_before_data_preparation_writes_anything(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pipeline", "--profile", "tiny", "--model", "smollm-9000", "--out", str(out)]) == 2
    assert "unknown model 'smollm-9000'" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(NbtoolkitError):
        PipelineConfig(model="smollm-9000")


# ------------------------------------------------------------------------------------------------ server


class CountingEngine:
    """A stand-in model that counts how many prompts it was asked to tokenize."""

    name, created, context_length = "m", 0, None
    sampling = {"temperature": 1.0, "top_p": 1.0, "source": "test"}

    def __init__(self) -> None:
        self.encoded = 0

    def settings(self, **values):
        from nbtoolkit.serve.engine import ChatEngine

        return ChatEngine.settings(self, **values)

    def encode(self, messages):
        self.encoded += 1
        return [1, 2, 3]

    def check(self, prompt, settings):
        return settings

    def stream(self, prompt, settings, completion):
        completion.text, completion.finish_reason = "ok", "stop"
        yield "ok"


@pytest.fixture
def served():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from nbtoolkit.serve.app import create_app

    engine = CountingEngine()
    with TestClient(create_app(engine, max_request_bytes=1000), raise_server_exceptions=False) as client:
        yield client, engine


def hello(**more):
    return {"messages": [{"role": "user", "content": "hello"}], **more}


@pytest.mark.parametrize("field,value", [
    ("max_tokens", True), ("max_tokens", "8"), ("seed", 2**70), ("seed", -(2**64)), ("seed", False),
    ("temperature", True), ("stream", "yes"), ("n", True),
])
def test_the_server_refuses_loose_types_and_unbounded_seeds_with_an_openai_400(served, field, value):
    client, engine = served
    response = client.post("/v1/chat/completions", json=hello(**{field: value}))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["type"] == "invalid_request_error"
    assert engine.encoded == 0


def test_the_server_accepts_a_64_bit_seed(served):
    client, _ = served
    assert client.post("/v1/chat/completions", json=hello(seed=2**64 - 1, max_tokens=4)).status_code == 200


def test_a_body_over_the_cap_gets_413_before_it_is_parsed_or_tokenized(served):
    client, engine = served
    response = client.post("/v1/chat/completions", json=hello(padding="x" * 2000))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the cap applies while reading
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}]}'

    response = client.post("/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert engine.encoded == 0


# ------------------------------------------------------------------------------------------------ resume


def test_metrics_after_the_resumed_checkpoint_are_dropped_once():
    import tempfile

    from nbtoolkit.runtime.events import drop_metrics_after, read_metrics

    with tempfile.TemporaryDirectory() as folder:
        rows = [{"step": 0, "phase": "precheck"}, {"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9},
                {"step": 3, "loss": 0.8}, {"message": "no step"}]
        (Path(folder) / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4')
        assert drop_metrics_after(folder, 2) == 1
        assert read_metrics(folder) == rows[:3] + rows[4:]


@pytest.mark.slow
def test_a_run_resumed_after_a_failed_checkpoint_logs_each_step_once(tmp_path, monkeypatch):
    import torch

    from nbtoolkit.models import tiny_model
    from nbtoolkit.runtime.events import read_metrics
    from nbtoolkit.training import checkpoints
    from test_sft import chat_rows, full_config, train, write_rows

    model_dir = tiny_model(seed=0, vocab_from=None).save(tmp_path / "model")
    train_file = write_rows(tmp_path / "train.jsonl", chat_rows(24))
    real_write, written = checkpoints._write_trainer_state, []

    def fail_on_second(path, progress):
        if written:
            raise OSError("disk full")
        written.append(progress.step)
        real_write(path, progress)

    monkeypatch.setattr(checkpoints, "_write_trainer_state", fail_on_second)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(OSError, match="disk full"):
            train(full_config(save_steps=1, max_steps=3), model_dir, train_file, tmp_path / "run")
        monkeypatch.setattr(checkpoints, "_write_trainer_state", real_write)
        train(full_config(save_steps=1, max_steps=3), model_dir, train_file, tmp_path / "run", resume=True)
    finally:
        torch.set_num_threads(threads)
    steps = [row["step"] for row in read_metrics(tmp_path / "run") if "loss" in row]
    assert steps == [1, 2, 3]


# ------------------------------------------------------------------------------------------------ job state


FAULTY_JOB = '''
import errno

import nbtoolkit.runtime.worker as worker


def end_on_a_bad_disk(config, *, run_dir, log=None, code="ENOSPC", **_):
    """Trains 'fine', then the disk refuses result.json and status.json, as a full or read-only one does."""
    real = worker.write_json_atomic

    def refuse(path, data):
        if str(path).endswith(("result.json", "status.json")) and "IN_PROGRESS" not in str(data):
            raise OSError(getattr(errno, code), "injected", str(path))
        return real(path, data)

    worker.write_json_atomic = refuse
    log.metric(step=1, loss=1.0)
    return {"steps": 1}
'''


@pytest.fixture
def faulty_kind(tmp_path):
    path = tmp_path / "faulty_job.py"
    path.write_text(FAULTY_JOB)
    return f"{path}:end_on_a_bad_disk"


def test_a_job_whose_result_cannot_be_written_is_failed_with_the_cause(tmp_path, faulty_kind):
    from nbtoolkit.runtime import JobSpec, LocalRuntime

    job = LocalRuntime(tmp_path / "runs").launch(JobSpec(faulty_kind, name="full-disk"))
    result = job.wait(progress=False, poll=0.1, timeout=120, raise_on_failure=False)
    status = job.status()
    assert status.state == "FAILED" and result.status == "FAILED"
    assert "cannot write result.json: the disk is full" in status.reason, status.reason
    assert result.reason == status.reason


def test_status_and_wait_never_raise_for_a_read_only_run_directory(tmp_path, faulty_kind, monkeypatch):
    import nbtoolkit.runtime.status as status_module
    from nbtoolkit.runtime import JobSpec, LocalRuntime

    job = LocalRuntime(tmp_path / "runs").launch(JobSpec(faulty_kind, name="read-only", extra={"code": "EROFS"}))
    while job._process.poll() is None:
        job._process.wait(timeout=120)

    def read_only(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(status_module, "write_json_atomic", read_only)
    status = job.status()
    assert status.state == "FAILED"
    assert "read-only" in status.reason and "update status.json" in status.reason, status.reason
    result = job.wait(progress=False, raise_on_failure=False)
    assert result.status == "FAILED" and "read-only" in result.reason

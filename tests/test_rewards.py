import json
import math

import pytest

from nbtoolkit.rewards import (
    REWARDS,
    as_trl_reward,
    binary_label_reward,
    format_aware_reward,
    get_reward,
    lambda_handler,
    make_label_reward,
    positive_reward_share,
    reply_text,
    rft_readiness,
    score_label_reply,
    verify_reward_function,
)


def sample(sample_id, reply, reference, question="Is this question good?"):
    return {"id": sample_id, "messages": [{"role": "system", "content": "Classify."},
                                          {"role": "user", "content": question},
                                          {"role": "assistant", "content": reply}],
            "reference_answer": reference}


SAMPLES = [
    sample("a", "HQ", "HQ"),
    sample("b", "The answer is lq-edit.", "LQ_EDIT"),
    sample("c", "LQ_EDIT", "LQ_CLOSE"),
    sample("d", "I cannot tell.", "HQ"),
]


def scores(outputs):
    return [o["aggregate_reward_score"] for o in outputs]


def test_binary_label_reward_follows_the_lambda_contract():
    outputs = binary_label_reward(SAMPLES)
    assert [o["id"] for o in outputs] == ["a", "b", "c", "d"]
    assert scores(outputs) == [1.0, 1.0, -1.0, -1.0]
    for output in outputs:
        assert {m["type"] for m in output["metrics_list"]} <= {"Metric", "Reward"}
        assert isinstance(output["aggregate_reward_score"], float)
    names = {m["name"]: m["value"] for m in outputs[1]["metrics_list"]}
    assert names["label_correct"] == 1.0 and names["bare_label"] == 0.0 and names["reply_words"] == 4.0


def test_binary_reward_tolerates_format_but_not_wrong_labels():
    for reply in ("HQ", "HQ.", "hq", " The answer is HQ ", "**HQ**"):
        assert score_label_reply(reply, "HQ")[0] == 1.0, reply
    for reply in ("LQ_CLOSE", "HQX", "", "high quality"):
        assert score_label_reply(reply, "HQ")[0] == -1.0, reply


def test_format_aware_reward_prefers_the_bare_label_and_short_replies():
    bare, _ = score_label_reply("LQ_EDIT.", "LQ_EDIT", kind="format")
    short, _ = score_label_reply("The answer is LQ_EDIT", "LQ_EDIT", kind="format")
    verbose, _ = score_label_reply("After reading the question carefully I think it is LQ_EDIT because " * 3,
                                   "LQ_EDIT", kind="format")
    wrong, _ = score_label_reply("HQ", "LQ_EDIT", kind="format")
    missing, _ = score_label_reply("no idea", "LQ_EDIT", kind="format")
    assert bare == 1.0
    assert short == pytest.approx(0.5 / (1 + 3 / 5))  # three extra words
    assert 0.0 < verbose < short < bare
    assert wrong == missing == -1.0
    assert scores(format_aware_reward(SAMPLES)) == [1.0, pytest.approx(0.5 / (1 + 3 / 5)), -1.0, -1.0]


def test_reference_outside_the_label_set_still_rewards_it():
    reward = make_label_reward(["yes", "no"])
    assert scores(reward([sample("x", "Maybe.", "maybe"), sample("y", "yes", "no")])) == [1.0, -1.0]


def test_registry_and_factory():
    assert set(REWARDS) == {"binary_label", "format_aware"}
    assert get_reward("binary_label") is binary_label_reward
    custom = get_reward("format_aware", labels=["positive", "negative"])
    assert scores(custom([sample("p", "positive", "positive"), sample("n", "It is negative", "negative")])) == [
        1.0, pytest.approx(0.5 / (1 + 2 / 5))]
    with pytest.raises(ValueError, match="binary_label"):
        get_reward("binary_lable")
    with pytest.raises(ValueError):
        make_label_reward(["HQ"], kind="fuzzy")


def test_reply_text_reads_converse_parts():
    assert reply_text({"messages": [{"role": "assistant", "content": [{"text": "H"}, {"text": "Q"}]}]}) == "HQ"
    assert reply_text({"messages": []}) == ""


def test_lambda_handler_accepts_every_event_shape(monkeypatch):
    assert scores(lambda_handler(SAMPLES, None)) == [1.0, 1.0, -1.0, -1.0]
    assert scores(lambda_handler({"samples": SAMPLES}, None)) == [1.0, 1.0, -1.0, -1.0]
    assert scores(lambda_handler({"body": json.dumps(SAMPLES)}, None)) == [1.0, 1.0, -1.0, -1.0]
    monkeypatch.setenv("REWARD_NAME", "format_aware")
    assert scores(lambda_handler({"samples": SAMPLES[:2]}, None))[1] == pytest.approx(0.3125)
    monkeypatch.setenv("REWARD_LABELS", "yes,no")
    assert scores(lambda_handler([sample("z", "yes", "no")], None)) == [-1.0]
    with pytest.raises(ValueError):
        lambda_handler(42, None)


def test_as_trl_reward_takes_strings_or_messages_and_logs_metrics():
    reward = as_trl_reward(binary_label_reward)
    logged = {}
    values = reward(
        prompts=[[{"role": "user", "content": "q1"}], "q2", "q2"],
        completions=[[{"role": "assistant", "content": "HQ."}], "LQ_EDIT", "LQ_CLOSE"],
        reference_answer=["HQ", "LQ_CLOSE", "LQ_CLOSE"],
        id=["p1", "p2", "p2"],  # GRPO repeats a prompt's id once per generation
        trainer_state=object(),
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    assert values == [1.0, -1.0, 1.0]
    assert reward.__name__ == binary_label_reward.__name__
    assert logged["binary_label_reward/label_correct"] == pytest.approx(2 / 3)


def test_verify_reward_function_passes_the_shipped_rewards():
    for fn in REWARDS.values():
        check = verify_reward_function(fn, SAMPLES)
        assert check.ok, check.problems
        assert check.table["score"].tolist() == scores(fn(SAMPLES))
        assert len(check.table) == 4


def _constant(samples):
    return [{"id": s["id"], "aggregate_reward_score": 1.0} for s in samples]


def _reversed(samples):
    return list(reversed(binary_label_reward(samples)))


def _nan(samples):
    return [{"id": s["id"], "aggregate_reward_score": math.nan} for s in samples]


def _string_score(samples):
    return [{"id": s["id"], "aggregate_reward_score": "1"} for s in samples]


def _bad_metric(samples):
    return [{"id": s["id"], "aggregate_reward_score": 0.0,
             "metrics_list": [{"name": "x", "value": 1.0, "type": "Score"}]} for s in samples]


def _crashes(samples):
    raise KeyError("reference")


def _too_few(samples):
    return binary_label_reward(samples)[:-1]


def _inverted(samples):
    return [{**o, "aggregate_reward_score": -o["aggregate_reward_score"]} for o in binary_label_reward(samples)]


@pytest.mark.parametrize(("fn", "expected"), [
    (_constant, "not more than the wrong reply"),
    (_inverted, "not more than the wrong reply"),
    (_reversed, "does not match"),
    (_nan, "not finite"),
    (_string_score, "expected a float"),
    (_bad_metric, "type 'Score'"),
    (_crashes, "raised KeyError"),
    (_too_few, "3 results for 4 samples"),
])
def test_verify_reward_function_reports_broken_functions(fn, expected):
    check = verify_reward_function(fn, SAMPLES)
    assert not check.ok
    assert any(expected in problem for problem in check.problems), check.problems


def test_positive_reward_share_groups_replies_by_prompt():
    replies = [sample("1", "HQ", "HQ", "q1"), sample("2", "LQ_EDIT", "HQ", "q1"),  # q1: one good reply of two
               sample("3", "LQ_EDIT", "HQ", "q2"), sample("4", "no", "HQ", "q3")]
    assert positive_reward_share(binary_label_reward, replies) == pytest.approx(1 / 3)
    assert "do SFT first" in rft_readiness(0.02)
    assert "RFT can help" in rft_readiness(0.4)
    assert "little left" in rft_readiness(0.99)

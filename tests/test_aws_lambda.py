"""Reward Lambdas: the zip runs on the standard library alone, deploys and updates through moto, and is verified by
invoking it (the invocation runs the zip's handler in a `python -S` subprocess, as the Lambda runtime would)."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from aws_for_tests import (
    LAMBDA_TRUST,
    REGION,
    capture,
    create_role,
    emulate_lambda_invoke,
    run_lambda_zip,
    set_fake_credentials,
)
from nbtoolkit.aws import AwsSession, allow_role_to_invoke, build_reward_zip, deploy_reward_lambda, verify_reward_lambda
from nbtoolkit.aws.lambda_rewards import HANDLER, sample_rows

SAMPLES = [{"id": "a", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "HQ."}],
            "reference_answer": "HQ"},
           {"id": "b", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "I think HQ"}],
            "reference_answer": "LQ_EDIT"}]


def test_zip_runs_on_the_standard_library_alone(tmp_path):
    data = build_reward_zip(tmp_path / "reward.zip")
    assert (tmp_path / "reward.zip").read_bytes() == data == build_reward_zip()  # deterministic
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"nbtoolkit/rewards.py", "nbtoolkit/labels.py", "nbtoolkit/aws/reward_handler.py"} <= names
    out = json.loads(run_lambda_zip(data, HANDLER, {"REWARD_NAME": "binary_label",
                                                    "REWARD_LABELS": "HQ,LQ_EDIT,LQ_CLOSE"},
                                    {"samples": SAMPLES}, tmp_path))
    assert [(o["id"], o["aggregate_reward_score"]) for o in out] == [("a", 1.0), ("b", -1.0)]
    assert {m["type"] for m in out[0]["metrics_list"]} == {"Metric", "Reward"}

    module = tmp_path / "length_reward.py"
    module.write_text("def score(samples):\n    return [{'id': s['id'], 'aggregate_reward_score': "
                      "-float(len(s['messages'][-1]['content']))} for s in samples]\n")
    custom = build_reward_zip(function=f"{module}:score")
    assert "length_reward.py" in zipfile.ZipFile(io.BytesIO(custom)).namelist()
    out = json.loads(run_lambda_zip(custom, HANDLER, {"NBT_REWARD_FUNCTION": "length_reward:score"},
                                    {"body": json.dumps(SAMPLES)}, tmp_path))
    assert [o["aggregate_reward_score"] for o in out] == [-3.0, -10.0]


def test_deploy_creates_then_updates_and_verifies(monkeypatch, tmp_path):
    set_fake_credentials(monkeypatch)
    with mock_aws():
        boto = boto3.Session(region_name=REGION)
        aws = AwsSession(boto_session=boto)
        role = create_role(boto, "RewardLambdaRole", LAMBDA_TRUST)
        sagemaker_role = create_role(boto, "SageMakerRole")
        emulate_lambda_invoke(boto, tmp_path)
        created = capture(boto, "lambda", "CreateFunction")
        updated = capture(boto, "lambda", "UpdateFunctionConfiguration")
        arn = deploy_reward_lambda("nbt-reward", role, labels=("HQ", "LQ_EDIT", "LQ_CLOSE"), aws=aws)
        assert arn == f"arn:aws:lambda:{REGION}:123456789012:function:nbt-reward"
        (request,) = created
        assert (request["Runtime"], request["Handler"], request["Role"]) == ("python3.12", HANDLER, role)
        assert request["Environment"] == {"Variables": {"REWARD_NAME": "binary_label",
                                                        "REWARD_LABELS": "HQ,LQ_EDIT,LQ_CLOSE"}}
        assert deploy_reward_lambda("nbt-reward", role, reward="format_aware", aws=aws) == arn
        assert updated[-1]["Environment"] == {"Variables": {"REWARD_NAME": "format_aware"}}

        rft = tmp_path / "rft.jsonl"
        rft.write_text("".join(json.dumps({"id": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}],
                                           "reference_answer": label}) + "\n"
                               for i, label in enumerate(["HQ", "LQ_EDIT", "LQ_CLOSE"] * 4)))
        assert len(sample_rows(rft)) == 8 and sample_rows(rft)[0]["messages"][-1]["role"] == "assistant"
        check = verify_reward_lambda(arn, rft, aws=aws)
        assert check.ok, check.problems
        assert list(check.table["score"]) == [1.0] * 8

        allow_role_to_invoke(sagemaker_role, arn, aws=aws)
        policy = boto.client("iam").get_role_policy(RoleName="SageMakerRole", PolicyName="nbtoolkit-invoke-reward")
        assert policy["PolicyDocument"]["Statement"][0]["Resource"][0] == arn

        with pytest.raises(ValueError, match="Lambda execution role"):
            deploy_reward_lambda("nbt-reward", "RewardLambdaRole", aws=aws)

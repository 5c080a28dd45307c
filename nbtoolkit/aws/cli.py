"""`nbtoolkit sagemaker ...`: check an account's setup, follow a SageMaker run directory, deploy a reward Lambda.

    nbtoolkit sagemaker check --role ARN --bucket BUCKET [--region us-east-1]
    nbtoolkit sagemaker status RUN_DIR          # SageMaker status, secondary status transitions
    nbtoolkit sagemaker logs RUN_DIR [--tail 50]
    nbtoolkit sagemaker stop RUN_DIR
    nbtoolkit sagemaker result RUN_DIR          # downloads model.tar.gz into RUN_DIR once the job ended
    nbtoolkit sagemaker reward-lambda --name NAME --role LAMBDA_ROLE_ARN [--labels HQ,LQ_EDIT] [--verify rft.jsonl]

Launching is done from Python (SageMakerRuntime.launch), where the JobSpec and its config live.
"""

from __future__ import annotations

import argparse


def add_sagemaker_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sagemaker", help="SageMaker: check the setup, follow runs, deploy a reward Lambda",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="sagemaker_command", required=True)

    check = commands.add_parser("check", help="credentials, role (exists, trusts SageMaker) and bucket access")
    check.add_argument("--role", required=True, help="SageMaker execution role ARN")
    check.add_argument("--bucket", required=True, help="S3 bucket for data, checkpoints and outputs")
    check.add_argument("--prefix", default="nbtoolkit")
    check.add_argument("--region", help="AWS region (default: the session's)")
    check.set_defaults(run=_run_check)

    for name, text in (("status", "status and secondary status transitions"), ("stop", "StopTrainingJob"),
                       ("result", "download the artifacts and print the result")):
        command = commands.add_parser(name, help=text)
        command.add_argument("run_dir", help="run directory written by SageMakerRuntime.launch")
        command.set_defaults(run=_run_job_command)
    logs = commands.add_parser("logs", help="the job's log (mirrored from CloudWatch)")
    logs.add_argument("run_dir")
    logs.add_argument("--tail", type=int, default=50)
    logs.set_defaults(run=_run_job_command)

    reward = commands.add_parser("reward-lambda", help="package, deploy or update, and verify a reward Lambda")
    reward.add_argument("--name", required=True, help="Lambda function name")
    reward.add_argument("--role", required=True, help="the Lambda's execution role ARN (trusts lambda.amazonaws.com)")
    reward.add_argument("--reward", default="binary_label", help="shipped reward: binary_label or format_aware")
    reward.add_argument("--labels", help="label set, e.g. HQ,LQ_EDIT,LQ_CLOSE")
    reward.add_argument("--function", help="your own reward instead: my_rewards.py:score (Lambda contract)")
    reward.add_argument("--allow-role", help="SageMaker role ARN allowed to invoke it (inline policy)")
    reward.add_argument("--verify", help="RFT JSONL whose first rows are used to check the deployed function")
    reward.add_argument("--region")
    reward.set_defaults(run=_run_reward)


def _run_check(args: argparse.Namespace) -> int:
    from nbtoolkit.aws.runtime import SageMakerRuntime

    runtime = SageMakerRuntime(role=args.role, bucket=args.bucket, prefix=args.prefix, region=args.region)
    checks = runtime._location_checks()
    if all(c.ok for c in checks):
        checks += runtime._online_checks({})
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:14s} {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


def _run_job_command(args: argparse.Namespace) -> int:
    from nbtoolkit.aws.job import SageMakerJob

    job = SageMakerJob.attach(args.run_dir)
    command = args.sagemaker_command
    if command == "status":
        status = job.status()
        print(status)
        for transition in status.transitions:
            print(f"  {transition.get('Status')}: {transition.get('StatusMessage')}")
        return 0
    if command == "logs":
        print(job.logs(args.tail))
        return 0
    if command == "stop":
        print(job.cancel())
        return 0
    result = job.result()
    print(result)
    return 0 if result.ok else 1


def _run_reward(args: argparse.Namespace) -> int:
    from nbtoolkit.aws.lambda_rewards import allow_role_to_invoke, deploy_reward_lambda, verify_reward_lambda
    from nbtoolkit.aws.session import AwsSession

    aws = AwsSession(region=args.region)
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip()) if args.labels else None
    arn = deploy_reward_lambda(args.name, args.role, reward=args.reward, labels=labels, function=args.function,
                               aws=aws)
    print(f"deployed {arn}")
    if args.allow_role:
        allow_role_to_invoke(args.allow_role, arn, aws=aws)
        print(f"{args.allow_role} may invoke it")
    check = verify_reward_lambda(arn, args.verify, aws=aws, labels=labels)
    print(check)
    return 0 if check.ok else 1

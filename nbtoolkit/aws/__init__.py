"""nbtoolkit on AWS: SageMaker training jobs with the LocalRuntime interface, Nova trainers, reward Lambdas.

    from nbtoolkit.aws import SageMakerRuntime
    runtime = SageMakerRuntime(role=role_arn, bucket=bucket, region="us-east-1", instance_type="ml.g5.2xlarge")
    job = runtime.launch(spec)      # same JobSpec as LocalRuntime; Nova models go through the SDK's Nova trainers
    job.wait(); job.result()

Names load on first use: this package is also imported inside training containers and reward Lambdas, where
boto3 and the SageMaker SDK are not needed.
"""

from __future__ import annotations

from nbtoolkit._lazy import lazy_exports

_EXPORTS = {
    "nbtoolkit.aws.runtime": ("SageMakerRuntime", "SageMakerDryRunReport"),
    "nbtoolkit.aws.job": ("SageMakerJob", "SageMakerJobStatus", "map_status"),
    "nbtoolkit.aws.container": ("hyperparameters_for",),
    "nbtoolkit.aws.session": ("AwsSession", "scrub"),
    "nbtoolkit.aws.errors": ("AwsError", "MissingCredentials", "AccessDenied", "Throttled", "BucketNotFound",
                             "RoleError", "RemoteJobFailed"),
    "nbtoolkit.aws.lambda_rewards": ("build_reward_zip", "deploy_reward_lambda", "verify_reward_lambda",
                                     "invoke_reward_lambda", "allow_role_to_invoke"),
    "nbtoolkit.aws.nova": ("plan_nova", "nova_trainer", "nova_hyperparameters"),
    "nbtoolkit.aws.hyperpod": ("hyperpod_commands", "monitor_commands"),
    "nbtoolkit.aws.deploy": ("DeployConfig", "Deployment", "DeployError", "deploy_model", "delete_deployment",
                             "upload_model", "BedrockImportConfig", "BedrockImport", "import_to_bedrock",
                             "delete_bedrock_import"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

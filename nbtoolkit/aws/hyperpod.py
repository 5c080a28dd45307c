"""SageMaker HyperPod: what a Nova job on a HyperPod cluster runs, spelled out.

On HyperPod compute the SDK trainers (`SFTTrainer(..., compute=HyperPodCompute(...)).train(wait=False)`) resolve
the recipe from SageMaker Hub, render it with the job's overrides into a local file and then call the HyperPod CLI
(`pip install` from aws/sagemaker-hyperpod-cli, branch release_v2) as the caller's own identity:

    hyperpod connect-cluster --cluster-name CLUSTER --namespace NAMESPACE
    hyperpod start-job --namespace NAMESPACE --recipe RENDERED_RECIPE.yaml \
        --override-parameters '{"instance_type": "ml.p5.48xlarge", "container": "IMAGE"}'

The job is then a Kubernetes job, not a SageMaker training job: follow and stop it with `monitor_commands`.
`hyperpod_commands` builds the exact argument lists the SDK runs (tests compare them with what the SDK runs).
"""

from __future__ import annotations

import json
import shlex


def hyperpod_commands(cluster: str, namespace: str, recipe_path: str, *, instance_type: str | None = None,
                      image: str | None = None, model_source: str | None = None) -> list[list[str]]:
    """The `hyperpod connect-cluster` and `hyperpod start-job` argument lists of one launch."""
    overrides: dict[str, str] = {}
    if instance_type:
        overrides["instance_type"] = instance_type
    if image:
        overrides["container"] = image
    if model_source:
        overrides["recipes.run.model_name_or_path"] = model_source
    start = ["hyperpod", "start-job", "--namespace", namespace, "--recipe", recipe_path]
    if overrides:
        start += ["--override-parameters", json.dumps(overrides)]
    return [["hyperpod", "connect-cluster", "--cluster-name", cluster, "--namespace", namespace], start]


def monitor_commands(job_name: str, namespace: str = "kubeflow") -> dict[str, list[str]]:
    """HyperPod CLI commands to follow a started job: status, logs (of one pod), list, cancel."""
    return {
        "status": ["hyperpod", "get-job", "--job-name", job_name, "--namespace", namespace],
        "pods": ["hyperpod", "list-pods", "--job-name", job_name, "--namespace", namespace],
        "logs": ["hyperpod", "get-log", "--job-name", job_name, "--pod", f"{job_name}-worker-0",
                 "--namespace", namespace],
        "list": ["hyperpod", "list-jobs", "--namespace", namespace],
        "cancel": ["hyperpod", "cancel-job", "--job-name", job_name, "--namespace", namespace],
    }


def as_shell(command: list[str]) -> str:
    """One argument list as a copy-pasteable shell line."""
    return shlex.join(command)

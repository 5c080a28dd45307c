"""Notebooks 03 and 04 with backend="sagemaker", executed by papermill against a moto server.

The kernel is another process, so it reaches moto through AWS_ENDPOINT_URL (ThreadedMotoServer). The server runs
in this process, so a stand-in for SageMaker's fleet lives here too: every training job the notebooks create starts
InProgress; a thread runs the job's code channel as the container would (the entry script, the real worker and the
tiny model), ships its output to CloudWatch Logs and model.tar.gz to S3, then marks the job Completed or Failed.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import boto3
import nbformat
import pytest

from aws_for_tests import (
    ACCOUNT,
    FAKE_KEY_ID,
    FAKE_SECRET,
    REGION,
    create_role,
    files_containing,
    publish_container_output,
    run_container,
    set_fake_credentials,
)
from jupyter_for_tests import write_kernelspec

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = ("03_supervised_fine_tuning.ipynb", "04_reinforcement_fine_tuning.ipynb")
BUCKET = "nbt-notebook-bucket"
NOTEBOOK_TIMEOUT = 600


class FakeSageMakerFleet(threading.Thread):
    """Runs the training jobs moto records, one at a time, as a SageMaker training container would."""

    def __init__(self, work: Path) -> None:
        super().__init__(name="fake-sagemaker-fleet", daemon=True)
        self.work = work
        self.stopping = threading.Event()
        self.done: dict[str, int] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        from moto.sagemaker.models import sagemaker_backends

        while not self.stopping.is_set():
            backend = sagemaker_backends[ACCOUNT][REGION]
            for name, job in list(backend.training_jobs.items()):
                if name not in self.done:
                    try:
                        self.done[name] = self.train(job)
                    except Exception as error:  # noqa: BLE001 - reported by the test
                        self.errors.append(f"{name}: {type(error).__name__}: {error}")
                        self.done[name] = -1
                        job.training_job_status, job.failure_reason = "Failed", str(error)
            self.stopping.wait(0.2)

    def train(self, job) -> int:
        def secondary(status: str, message: str) -> None:
            job.secondary_status = status
            job.secondary_status_transitions.append({"Status": status, "StartTime": job.creation_time,
                                                     "StatusMessage": message})

        secondary("Training", "Training image download completed. Training in progress.")
        request = {"TrainingJobName": job.training_job_name, "InputDataConfig": job.input_data_config,
                   "HyperParameters": job.hyper_parameters}
        boto = boto3.Session(region_name=REGION)
        code, lines, model_dir = run_container(boto, request, self.work / job.training_job_name, timeout=400)
        secondary("Uploading", "Uploading generated training model")
        publish_container_output(boto, job.training_job_name, lines, model_dir,
                                 job.model_artifacts["S3ModelArtifacts"])
        if code == 0:
            job.training_job_status = "Completed"
            secondary("Completed", "Training job completed")
        else:
            failure = self.work / job.training_job_name / "output" / "failure"
            job.failure_reason = failure.read_text() if failure.exists() else "AlgorithmError: exit code 1"
            job.training_job_status = "Failed"
            self.errors.append("\n".join(lines[-20:]))
        return code


@pytest.fixture(scope="module")
def sagemaker_backend(tmp_path_factory):
    from moto.sagemaker.models import FakeTrainingJob
    from moto.server import ThreadedMotoServer

    work = tmp_path_factory.mktemp("sagemaker")
    jupyter = tmp_path_factory.mktemp("jupyter-path")
    write_kernelspec(jupyter)
    original_init = FakeTrainingJob.__init__

    def starts_in_progress(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.training_job_status, self.secondary_status = "InProgress", "Starting"

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FakeTrainingJob, "__init__", starts_in_progress)
        server.start()
        host, port = server.get_host_and_port()
        set_fake_credentials(patch)
        patch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        patch.setenv("JUPYTER_PATH", str(jupyter))
        # moto's server does not implement iam:SimulatePrincipalPolicy, which the SDK uses to pre-check the
        # role; the SDK's own switch turns that pre-check off (tests/test_aws_runtime.py covers it in-process).
        patch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
        boto = boto3.Session(region_name=REGION)
        boto.client("s3").create_bucket(Bucket=BUCKET)
        role = create_role(boto)
        fleet = FakeSageMakerFleet(work)
        fleet.start()
        try:
            yield {"role": role, "fleet": fleet, "boto": boto}
        finally:
            fleet.stopping.set()
            fleet.join(timeout=30)
            server.stop()


def test_notebooks_03_and_04_train_on_sagemaker(sagemaker_backend, tmp_path):
    import papermill

    workdir = tmp_path / "runs"
    parameters = {"profile": "tiny", "workdir": str(workdir), "backend": "sagemaker",
                  "role_arn": sagemaker_backend["role"], "bucket": BUCKET, "region": REGION,
                  "instance_type": "ml.g5.xlarge"}
    for name in NOTEBOOKS:
        started = time.monotonic()
        try:
            papermill.execute_notebook(str(NOTEBOOK_DIR / name), str(tmp_path / name), parameters=parameters,
                                       cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                                       execution_timeout=NOTEBOOK_TIMEOUT)
        except papermill.PapermillExecutionError as error:
            fleet = sagemaker_backend["fleet"]
            pytest.fail(f"{name} failed in cell {error.cell_index}: {error.ename}: {error.evalue}\n"
                        + "\n".join(fleet.errors), pytrace=False)
        print(f"{name}: {time.monotonic() - started:.0f} s")
    fleet = sagemaker_backend["fleet"]
    assert fleet.errors == []
    assert sorted(fleet.done.values()) == [0, 0] and len(fleet.done) == 2  # one SFT and one RFT training job
    stages = json.loads((workdir / "stages.json").read_text())
    for stage in ("sft", "rft"):
        run_dir = Path(stages["models"][stage])
        info = json.loads((run_dir / "sagemaker.json").read_text())
        assert info["jobs"][-1]["name"] in fleet.done
        assert (run_dir / "model" / "config.json").is_file()  # model.tar.gz came home
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "COMPLETED" and status["sagemaker_status"] == "Completed"
        assert [t["Status"] for t in status["transitions"]][-1] == "Completed"
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert any("loss" in row for row in metrics)
    executed = nbformat.read(tmp_path / NOTEBOOKS[0], as_version=4)
    assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    # Credentials never land in the notebooks' outputs or run directories.
    assert files_containing(tmp_path, FAKE_KEY_ID, FAKE_SECRET) == []

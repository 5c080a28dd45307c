"""A SageMaker job's CloudWatch log, mirrored into its local run directory (log.txt, metrics.jsonl, progress.json
and stdout.log), so a SageMaker run reads like a local one."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from nbtoolkit.aws.entrypoint import LOG_PREFIX, METRIC_PREFIX, PROGRESS_PREFIX, STATUS_PREFIX
from nbtoolkit.aws.errors import AwsError
from nbtoolkit.aws.session import AwsSession
from nbtoolkit.runtime.events import (
    LOG_FILE,
    METRICS_FILE,
    PROGRESS_FILE,
    STDOUT_FILE,
    RunLog,
    read_json,
    write_json_atomic,
)

CLOUDWATCH_FILE = "cloudwatch.json"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
LOG_SYNC_INTERVAL = 5.0  # seconds between CloudWatch reads of one run directory
_SYNC_LOCKS: dict[str, threading.Lock] = {}
_LAST_SYNC: dict[str, float] = {}


class CloudWatchMirror:
    """Copies a training job's CloudWatch log events into the local run directory, incrementally.

    The first stream (algo-1, the leader) feeds log.txt (NBT_LOG lines), metrics.jsonl (NBT_METRIC lines) and
    progress.json; every line of every stream goes to stdout.log. Read positions live in cloudwatch.json.
    """

    def __init__(self, aws: AwsSession, run_dir: Path, job_name: str) -> None:
        self.aws = aws
        self.run_dir = run_dir
        self.job_name = job_name

    def sync(self) -> int:
        """Fetch new events; returns how many lines were added. No log group yet means no lines yet."""
        state = read_json(self.run_dir / CLOUDWATCH_FILE, {})
        tokens = state.setdefault(self.job_name, {})
        try:
            streams = self._streams()
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return 0
            raise
        added = 0
        for index, stream in enumerate(streams):
            token = tokens.get(stream)
            while True:
                params = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if token:
                    params["nextToken"] = token
                response = self.aws.call("logs", "get_log_events", **params)
                events = response.get("events", [])
                self._route([e.get("message", "") for e in events], leader=index == 0,
                            stream=stream if len(streams) > 1 else None)
                added += len(events)
                new_token = response.get("nextForwardToken")
                if not events or new_token == token:
                    token = new_token or token
                    break
                token = new_token
            tokens[stream] = token
        write_json_atomic(self.run_dir / CLOUDWATCH_FILE, state)
        return added

    def _streams(self) -> list[str]:
        names, token = [], None
        while True:
            params = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{self.job_name}/"}
            if token:
                params["nextToken"] = token
            response = self.aws.call("logs", "describe_log_streams", **params)
            names += [s["logStreamName"] for s in response.get("logStreams", [])]
            token = response.get("nextToken")
            if not token:
                return sorted(names, key=_host_order)

    def _route(self, lines: list[str], *, leader: bool, stream: str | None) -> None:
        logs, metrics, other = [], [], []
        progress = None
        for raw in lines:
            for line in self.aws.scrub(raw).splitlines() or [""]:
                if leader and line.startswith(LOG_PREFIX):
                    logs.append(line[len(LOG_PREFIX):])
                elif leader and line.startswith(METRIC_PREFIX):
                    try:
                        metrics.append(json.dumps(json.loads(line[len(METRIC_PREFIX):])))
                    except ValueError:
                        other.append(line)
                elif leader and line.startswith(PROGRESS_PREFIX):
                    try:
                        progress = json.loads(line[len(PROGRESS_PREFIX):])
                    except ValueError:
                        other.append(line)
                elif line.startswith(STATUS_PREFIX):
                    continue  # the status comes from DescribeTrainingJob
                else:
                    other.append(f"[{stream}] {line}" if stream else line)
        for name, rows in ((LOG_FILE, logs), (METRICS_FILE, metrics), (STDOUT_FILE, other)):
            if rows:
                with open(self.run_dir / name, "a", encoding="utf-8") as handle:
                    handle.write("\n".join(rows) + "\n")
        if progress is not None:
            write_json_atomic(self.run_dir / PROGRESS_FILE, progress)


def sync_run_logs(aws: AwsSession, run_dir: str | os.PathLike, info: dict[str, Any], *, force: bool = False) -> int:
    """Copy new CloudWatch lines of every attempt (sagemaker.json's jobs) into the run directory; returns how many
    were added. Calls closer than LOG_SYNC_INTERVAL seconds apart (a monitor thread and wait() polling together)
    skip the fetch unless force=True; one lock per run directory keeps two threads from appending the same lines."""
    run_dir = Path(run_dir)
    key = str(run_dir)
    with _SYNC_LOCKS.setdefault(key, threading.Lock()):
        now = time.monotonic()
        if not force and now - _LAST_SYNC.get(key, -1e9) < LOG_SYNC_INTERVAL:
            return 0
        _LAST_SYNC[key] = now
        added = 0
        for job in info.get("jobs") or []:
            if job.get("name") and info.get("backend") != "hyperpod":
                try:
                    added += CloudWatchMirror(aws, run_dir, job["name"]).sync()
                except AwsError as error:
                    RunLog(run_dir, echo=None).warning(f"could not read CloudWatch logs: {error}")
                    break
        return added


def _host_order(stream: str) -> tuple[int, str]:
    """Sort key of a log stream "<job>/algo-<n>-<timestamp>": algo-1 (the leader) first."""
    parts = stream.rsplit("/", 1)[-1].split("-")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 1_000_000, stream)

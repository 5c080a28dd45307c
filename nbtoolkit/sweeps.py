"""Sweeps: a grid of training jobs (customer_data_percent, lr, LoRA alpha, steps, ...), each followed by a domain
evaluation and a general-ability evaluation, with a results table, a Pareto front and the best run.

    sweep = Sweep(JobSpec("sft_lora", config, model=..., train_file=..., labels=...),
                  {"customer_data_percent": [100, 75, 50], "lr": [1e-4, 2e-4]},
                  eval_file="prepared/eval/chat.jsonl", general_files=files, out_dir="runs/sweep")
    sweep.start()            # returns at once: the jobs run as subprocesses, a thread schedules them
    sweep.results()          # one row per grid point, filled in as jobs finish
    sweep.best(); sweep.pareto_figure()

Any runtime whose `launch(spec)` returns a job with status(), result() and cancel() works (LocalRuntime, or the
SageMaker runtime); `model_of(job)` says which model an evaluation job should load from a training job.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from nbtoolkit.errors import NbtoolkitError, unknown_name_message

SWEEP_FILE = "sweep.json"
MIX_KEY = "customer_data_percent"
ALIASES = {"steps": "max_steps", "lora_alpha": "alpha", "learning_rate": "lr"}
PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
VALIDATION_PREFIX = "validation_"
PER_JOB_GB = 3.0  # peak memory of one local training job with the embedded model (README: under 4 GB)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    keys = list(grid)
    for key in keys:
        if isinstance(grid[key], (str, bytes)) or not isinstance(grid[key], Sequence) or not grid[key]:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True for rows no other row beats on both x and y (higher is better for both); NaN rows are never on it."""
    values = table[[x, y]].astype(float)
    front = []
    for i, row in values.iterrows():
        if row.isna().any():
            front.append(False)
            continue
        others = values.drop(index=i).dropna()
        dominated = ((others[x] >= row[x]) & (others[y] >= row[y]) & ((others[x] > row[x]) | (others[y] > row[y])))
        front.append(not dominated.any())
    return pd.Series(front, index=table.index, name="pareto")


def available_memory_gb() -> float | None:
    """MemAvailable from /proc/meminfo (None where there is no /proc)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        return None
    return None


def auto_parallel(per_job_gb: float = PER_JOB_GB) -> int:
    """Jobs to run at once: bounded by free memory and by one job per two CPU cores (torch uses them all)."""
    memory = available_memory_gb()
    by_memory = int(memory // per_job_gb) if memory else 1
    by_cpu = max(1, (os.cpu_count() or 2) // 2)
    return max(1, min(by_memory, by_cpu))


def job_threads_env(jobs_at_once: int, cores: int | None = None) -> dict[str, str]:
    """Worker environment giving each of `jobs_at_once` local jobs its share of the cores (at least one thread),
    so jobs side by side do not oversubscribe the CPU."""
    threads = str(max(1, (cores or os.cpu_count() or 1) // max(1, jobs_at_once)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _local_model_of(job: Any) -> str:
    return str(job.run_dir)


class Sweep:
    """A grid of training jobs with domain and general evaluations; see the module docstring.

    base: the training JobSpec every point starts from. grid: {field: [values]}; fields are the config's
    hyperparameters (aliases: steps, lora_alpha, learning_rate) and customer_data_percent (needs mix or
    general_files). When max_steps varies alone, warmup_steps keeps its share of the steps and save_steps is capped.
    mix: the category weights for customer_data_percent < 100 (default: the base spec's mix, else the advised
    local default). general_files: {category: chat JSONL} (GeneralDataRegistry.write).
    eval_file: domain evaluation rows (None: no domain evaluation). general: keyword arguments of
    nbtoolkit.forgetting.evaluate_general (benchmarks, limit, data_dir, base_model, ...), or None to skip it.
    Each model gets one evaluation job (run_point_eval) doing both, on the same runtime.
    baseline: also evaluate the untrained base model (a reference point in tables and figures).
    """

    def __init__(self, base: Any, grid: Mapping[str, Sequence[Any]], *, out_dir: str | os.PathLike,
                 runtime: Any = None, mix: Any = None, general_files: Mapping[str, str] | None = None,
                 eval_file: str | os.PathLike | None = None, eval_config: Any = None,
                 validation_file: str | os.PathLike | None = None,
                 general: Mapping[str, Any] | None = None, baseline: bool = True, max_parallel: int | str = 1,
                 domain_metric: str | None = None, model_of: Callable[[Any], str] = _local_model_of,
                 poll: float = 1.0) -> None:
        from nbtoolkit.runtime import LocalRuntime

        self.base = base
        self.out_dir = Path(out_dir)
        self.max_parallel = auto_parallel() if max_parallel == "auto" else int(max_parallel)
        self.runtime = runtime if runtime is not None else LocalRuntime(
            self.out_dir / "jobs", env=job_threads_env(self.max_parallel))
        self.grid = {ALIASES.get(k, k): list(v) for k, v in grid.items()}
        self.general_files = dict(general_files or base.extra.get("general_data") or {})
        self.mix = self._base_mix(mix)
        self.eval_file = str(eval_file) if eval_file is not None else None
        self.validation_file = str(validation_file) if validation_file is not None else None
        if self.eval_file is not None and self.validation_file is None:
            warnings.warn("the best run and the Pareto front are chosen on eval_file: pass validation_file= (rows "
                          "carved from the training data) so the evaluation rows stay unseen by every choice",
                          UserWarning, stacklevel=2)
        self.eval_config = eval_config
        self.general = dict(general) if general is not None else None
        if self.general is not None:
            import inspect

            from nbtoolkit.forgetting import evaluate_general

            known = set(inspect.signature(evaluate_general).parameters) - {"model", "log", "progress"}
            for key in self.general:
                if key not in known:
                    raise ValueError(unknown_name_message("general evaluation setting", key, sorted(known)))
        self.baseline = baseline
        self.domain_metric = domain_metric or ("label_accuracy" if base.labels else "exact_match")
        # what best() and the Pareto front rank by: the validation score when there is one
        self.choice_metric = f"{VALIDATION_PREFIX}{self.domain_metric}" if self.validation_file else self.domain_metric
        self.model_of = model_of
        self.poll = poll
        self.points = [{"index": i, "params": params, "state": PENDING, "jobs": {}, "metrics": {}, "advice": [],
                        "error": None} for i, params in enumerate(grid_points(self.grid))]
        self.specs = [self._spec(p) for p in self.points]  # builds every point first: bad values fail here
        self.reference: dict[str, Any] | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active: dict[int, Any] = {}

    # -- building specs -----------------------------------------------------------------------------------------

    def _base_mix(self, mix: Any) -> Any:
        from nbtoolkit.mixing import DEFAULT_LOCAL_WEIGHTS, MixConfig

        if mix is not None:
            return mix if isinstance(mix, MixConfig) else MixConfig.from_dict(mix)
        if self.base.extra.get("mix"):
            return MixConfig.from_dict(self.base.extra["mix"])
        if MIX_KEY in self.grid:
            weights = {c: w for c, w in DEFAULT_LOCAL_WEIGHTS.items() if c in self.general_files}
            if not weights:
                raise ValueError(f"{MIX_KEY} in the grid needs category weights and general data: pass "
                                 "general_files= (GeneralDataRegistry.write) and optionally mix=")
            return MixConfig.normalized(50, weights)
        return None

    def _spec(self, point: dict[str, Any]) -> Any:
        from nbtoolkit.advisor import advise_launch
        from nbtoolkit.mixing import mixing_extra

        params = dict(point["params"])
        config = self.base.config
        names = {f for f in config.to_dict()}
        overrides = {k: v for k, v in params.items() if k != MIX_KEY}
        for key in overrides:
            if key not in names:
                raise ValueError(unknown_name_message(f"{config.METHOD} hyperparameter", key,
                                                      [*sorted(names - {"platform"}), MIX_KEY]))
        if "max_steps" in overrides:
            steps = overrides["max_steps"]
            if "warmup_steps" not in overrides:
                overrides["warmup_steps"] = min(steps - 1, round(config.warmup_steps / config.max_steps * steps))
            if "save_steps" not in overrides:
                overrides["save_steps"] = min(config.save_steps, steps)
        extra = dict(self.base.extra)
        mix = None
        if MIX_KEY in params:
            mix = self.mix.with_customer_percent(params[MIX_KEY])
            extra.pop("mix", None)
            extra.pop("general_data", None)
            if mix.mixing:
                extra.update(mixing_extra(mix, self.general_files))
            else:
                extra.update({"mix": mix.to_dict(), "general_data": {}})
        elif extra.get("mix"):
            from nbtoolkit.mixing import MixConfig

            mix = MixConfig.from_dict(extra["mix"])
        if hasattr(config, "mixing"):
            overrides["mixing"] = bool(mix is not None and mix.mixing)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the same advice is recorded below, once per point
            config = replace(config, **overrides)
        point["advice"] = [a.message for a in advise_launch(config, mix=mix)]
        return replace(self.base, config=config, extra=extra, name=f"{self.base.name}-{point['index']}")

    def _eval_spec(self, model: str, name: str) -> Any | None:
        """One job evaluating `model`: the domain eval_file and the general benchmarks, one model load."""
        from nbtoolkit.runtime import JobSpec

        if self.eval_file is None and self.validation_file is None and self.general is None:
            return None
        return JobSpec(POINT_EVAL_KIND, self.eval_config, model=model, eval_file=self.eval_file,
                       labels=self.base.labels, name=name,
                       extra={"general": self.general, "validation_file": self.validation_file})

    # -- running ------------------------------------------------------------------------------------------------

    def estimate(self, *, calibrate: bool = False):
        """How long the grid's training jobs take on this machine, max_parallel at a time (an Estimate; the
        evaluation jobs are named in its notes, not timed). calibrate=True times the method first when no rate
        is known (about 30 s)."""
        from nbtoolkit.estimate.local import estimate_jobs

        evaluations = len(self.specs) + self.baseline if self._eval_spec("model", "eval") is not None else 0
        notes = (f"the {evaluations} evaluation jobs are not included",) if evaluations else ()
        return estimate_jobs(self.specs, "sweep", calibrate=calibrate, at_once=self.max_parallel, notes=notes,
                             runs_dir=getattr(self.runtime, "runs_dir", None))

    def start(self, *, show_estimate: bool = True) -> Sweep:
        """Launch the sweep in a background thread and return at once (jobs are subprocesses); prints the
        estimate first (show_estimate=False: not)."""
        if self._thread is not None and self._thread.is_alive():
            raise NbtoolkitError("this sweep is already running")
        if show_estimate and hasattr(self.runtime, "runs_dir"):
            try:
                print(self.estimate())
            except Exception as error:  # noqa: BLE001 - an estimate never stops the sweep it describes
                print(f"estimate: not available ({type(error).__name__}: {error})")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._save()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_all, name="nbtoolkit-sweep", daemon=True)
        self._thread.start()
        return self

    def run(self) -> pd.DataFrame:
        """start() and wait(): for scripts."""
        return self.start().wait()

    def wait(self, timeout: float | None = None) -> pd.DataFrame:
        """Block until every point is done (or timeout seconds), then return results()."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.results()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def watch(self, poll: float = 2.0) -> threading.Thread:
        """Show the sweep's table in the notebook and refresh it from a thread until the sweep ends (plain HTML
        through a display handle: the kernel stays free and it shows where widgets do not render)."""
        from IPython.display import HTML, display

        handle = display(HTML(self._repr_html_()), display_id=True)

        def refresh() -> None:
            while True:
                running = self.running
                handle.update(HTML(self._repr_html_()))
                if not running:
                    return
                time.sleep(poll)

        thread = threading.Thread(target=refresh, name="nbtoolkit-sweep-watch", daemon=True)
        thread.start()
        return thread

    def _repr_html_(self) -> str:
        import html

        table = self.results()
        states = table["state"].value_counts().to_dict()
        head = ", ".join(f"{n} {s}" for s, n in states.items())
        shown = [c for c in (*self.grid, "state", "final_loss", self.domain_metric, self.general_metric, "pareto",
                             "error") if c in table]
        return (f'<div class="nbt-sweep"><b>Sweep</b> ({len(self.points)} runs: {html.escape(head)})'
                f"{table[shown].to_html(float_format=lambda v: f'{v:.4g}', na_rep='–')}</div>")

    def cancel(self) -> None:
        """Stop launching and cancel the running jobs (their points end 'cancelled')."""
        self._stop.set()
        for job in list(self._active.values()):
            try:
                job.cancel()
            except Exception:  # noqa: BLE001 - a job that already ended
                pass

    def _run_all(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if self.baseline and self.reference is None:
            self._run_reference()
        with ThreadPoolExecutor(max_workers=self.max_parallel) as pool:
            list(pool.map(self._run_point, range(len(self.points))))
        self._save()

    def _wait_job(self, key: int, spec: Any) -> Any:
        """Launch a job and poll it to the end; returns its TrainingResult (raises when it did not complete)."""
        job = self.runtime.launch(spec)
        self._active[key] = job
        try:
            while not job.status().done:
                if self._stop.is_set():
                    job.cancel()
                    raise _Cancelled()
                time.sleep(self.poll)
        finally:
            self._active.pop(key, None)
        if self._stop.is_set():  # cancel() may have ended the job before this loop saw the stop
            raise _Cancelled()
        result = job.result()
        if not result.ok:
            raise NbtoolkitError(f"{spec.kind} job {spec.name} {result.status}: {result.reason} ({job.run_dir})")
        return job, result

    def _evaluate(self, key: int, model: str, name: str, record: dict[str, Any]) -> None:
        spec = self._eval_spec(model, name)
        if spec is None:
            return
        job, result = self._wait_job(key, spec)
        metrics = result.output.get("metrics", {})
        kept = (self.domain_metric, f"{self.domain_metric}_stderr", "exact_match", "label_accuracy", "macro_f1",
                self.choice_metric, f"{self.choice_metric}_stderr")
        self._update(record, jobs={"eval": str(getattr(job, "run_dir", ""))},
                     metrics={k: v for k, v in metrics.items()
                              if k in kept or k.endswith(("_accuracy", "_accuracy_stderr")) or k.startswith("retention_")})

    def _run_reference(self) -> None:
        record = {"index": "base", "params": {}, "state": RUNNING, "jobs": {}, "metrics": {}, "advice": [],
                  "error": None}
        with self._lock:
            self.reference = record
        try:
            self._evaluate(-1, self.base.model, f"eval-{self.base.name}-base", record)
            self._update(record, state=DONE)
        except _Cancelled:
            self._update(record, state=CANCELLED)
        except Exception as error:  # noqa: BLE001 - shown in the table, the sweep goes on
            self._update(record, state=FAILED, error=f"{type(error).__name__}: {error}")

    def _run_point(self, index: int) -> None:
        point, spec = self.points[index], self.specs[index]
        if self._stop.is_set():
            self._update(point, state=CANCELLED)
            return
        self._update(point, state=RUNNING)
        try:
            job, result = self._wait_job(index, spec)
            output = result.output
            metrics = {k: output.get(k) for k in ("final_loss", "eval_loss", "train_seconds")
                       if output.get(k) is not None}
            if output.get("mix"):
                metrics["realized_customer_percent"] = output["mix"].get("customer")
            self._update(point, jobs={"train": str(getattr(job, "run_dir", ""))}, metrics=metrics)
            self._evaluate(index, self.model_of(job), f"eval-{self.base.name}-{index}", point)
            self._update(point, state=DONE)
        except _Cancelled:
            self._update(point, state=CANCELLED)
        except Exception as error:  # noqa: BLE001 - one failed point must not stop the others
            self._update(point, state=FAILED, error=f"{type(error).__name__}: {error}")

    # -- results ------------------------------------------------------------------------------------------------

    def _update(self, record: dict[str, Any], *, jobs: dict | None = None, metrics: dict | None = None,
                **fields: Any) -> None:
        """Change a point's record and rewrite sweep.json, under the lock (threads update points concurrently)."""
        with self._lock:
            record["jobs"].update(jobs or {})
            record["metrics"].update(metrics or {})
            record.update(fields)
            self._save()

    def _snapshot(self) -> tuple[list[dict], dict | None]:
        with self._lock:
            return copy.deepcopy(self.points), copy.deepcopy(self.reference)

    def _save(self) -> None:
        from nbtoolkit.runtime.events import write_json_atomic

        with self._lock:
            points, reference = self._snapshot()
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.out_dir / SWEEP_FILE, {
                "base": self.base.to_dict(), "grid": self.grid, "mix": self.mix.to_dict() if self.mix else None,
                "domain_metric": self.domain_metric, "choice_metric": self.choice_metric,
                "eval_file": self.eval_file, "validation_file": self.validation_file, "general": self.general,
                "reference": reference, "points": points})

    @property
    def general_metric(self) -> str:
        return "general_accuracy"

    def results(self) -> pd.DataFrame:
        """One row per grid point (and 'base' when evaluated): parameters, state, metrics, Pareto flag, advice."""
        points, reference = self._snapshot()
        return results_table(points, reference, self.choice_metric, self.general_metric)

    def best(self, *, max_general_drop: float | None = 0.01) -> pd.Series:
        """best_run() of results(), ranked by choice_metric (the validation score when validation_file is given)."""
        return best_run(self.results(), self.choice_metric, self.general_metric, max_general_drop=max_general_drop)

    def pareto_figure(self, ax=None):
        """Domain metric against general metric per run, the Pareto front joined, the base model marked."""
        from nbtoolkit.plots import pareto_figure

        table = self.results()
        return pareto_figure(table, x=self.general_metric, y=self.choice_metric, labels=list(self.grid), ax=ax)

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> pd.DataFrame:
        """The results table of a sweep directory (also while or after another kernel runs it)."""
        from nbtoolkit.runtime.events import read_json

        data = read_json(Path(out_dir) / SWEEP_FILE)
        if data is None:
            raise NbtoolkitError(f"{out_dir} holds no {SWEEP_FILE}")
        return results_table(data["points"], data.get("reference"), data.get("choice_metric", data["domain_metric"]),
                             "general_accuracy")


class _Cancelled(Exception):
    pass


POINT_EVAL_KIND = "nbtoolkit.sweeps:run_point_eval"


def run_point_eval(config: Any = None, *, model: str, run_dir: str, eval_file: str | None = None,
                   labels: Sequence[str] | None = None, log: Any = None, general: Mapping[str, Any] | None = None,
                   validation_file: str | None = None, **_: Any) -> dict[str, Any]:
    """Job function (kind POINT_EVAL_KIND): the domain evaluation of eval_file (EvalConfig `config`, saved in
    RUN_DIR/eval), of validation_file (metrics prefixed "validation_", saved in RUN_DIR/validation) and
    evaluate_general(**general) (saved in RUN_DIR/general) with one model load."""
    from nbtoolkit.models import load_model

    loaded = load_model(model)
    metrics: dict[str, Any] = {}
    output: dict[str, Any] = {}
    if eval_file is not None:
        from nbtoolkit.evaluation import evaluate

        result = evaluate(loaded, eval_file, config, labels=labels, run_dir=Path(run_dir) / "eval", log=log,
                          progress=False)
        metrics.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
        output["eval_dir"] = str(Path(run_dir) / "eval")
    if validation_file is not None:
        from nbtoolkit.evaluation import evaluate

        result = evaluate(loaded, validation_file, config, labels=labels, run_dir=Path(run_dir) / "validation",
                          log=log, progress=False)
        metrics.update({f"{VALIDATION_PREFIX}{k}": v for k, v in result.metrics.items()
                        if isinstance(v, (int, float))})
    if general is not None:
        from nbtoolkit.forgetting import GENERAL_DIR, evaluate_general

        result = evaluate_general(loaded, **general, log=log, progress=False)
        output["general_dir"] = str(result.save(Path(run_dir) / GENERAL_DIR))
        metrics.update(result.headline())
    return {"metrics": metrics, **output}


def results_table(points: Sequence[Mapping[str, Any]], reference: Mapping[str, Any] | None, domain_metric: str,
                  general_metric: str) -> pd.DataFrame:
    """The sweep's table: index = point (or 'base'), parameter columns, state, metrics, pareto, advice, error."""
    rows = []
    for point in ([reference] if reference else []) + list(points):
        rows.append({"run": point["index"], **point["params"], "state": point["state"], **point["metrics"],
                     "advice": len(point.get("advice") or []), "error": point.get("error")})
    params = list(dict.fromkeys(k for point in points for k in point["params"]))
    table = pd.DataFrame(rows).set_index("run")
    table = table[[*params, *(c for c in table.columns if c not in params)]]
    for column in (domain_metric, general_metric):
        if column not in table:
            table[column] = math.nan
    table["pareto"] = False
    trained = table.index != "base"
    if trained.any():
        table.loc[trained, "pareto"] = pareto_front(table[trained], general_metric, domain_metric)
    return table


def best_run(table: pd.DataFrame, domain_metric: str, general_metric: str, *,
             max_general_drop: float | None = 0.01) -> pd.Series:
    """The trained run with the best domain metric whose general metric stays within max_general_drop of the
    base model's (when the base was evaluated); without a qualifying run, the best domain + general sum on the
    Pareto front."""
    runs = table[(table.index != "base") & table[domain_metric].notna()]
    if runs.empty:
        raise NbtoolkitError("no finished run with a domain metric yet")
    if max_general_drop is not None and "base" in table.index and pd.notna(table.loc["base", general_metric]):
        floor = table.loc["base", general_metric] - max_general_drop
        kept = runs[runs[general_metric] >= floor]
        if not kept.empty:
            return kept.sort_values([domain_metric, general_metric], ascending=False).iloc[0]
    front = runs[runs["pareto"]] if runs["pareto"].any() else runs
    score = front[domain_metric] + front[general_metric].fillna(0)
    return front.loc[score.idxmax()]


__all__ = ["POINT_EVAL_KIND", "Sweep", "auto_parallel", "best_run", "grid_points", "job_threads_env", "pareto_front",
           "results_table", "run_point_eval"]

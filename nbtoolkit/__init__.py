"""nbtoolkit: customize language models from a notebook, offline on a CPU or on SageMaker.

The names a notebook uses are importable from here; heavy modules (torch, transformers) load on first use.
"""

from __future__ import annotations

from nbtoolkit._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "nbtoolkit.data": ("ColumnMapping", "PrepareConfig", "prepare_dataset", "load_table",
                       "make_stackoverflow_dataset", "validate_records"),
    "nbtoolkit.models": ("load_model", "model_info", "list_models", "tiny_model"),
    "nbtoolkit.training.config": ("SFTLoraConfig", "SFTFullConfig", "RFTLoraConfig", "EvalConfig"),
    "nbtoolkit.runtime": ("LocalRuntime", "Job", "JobSpec", "TrainingResult"),
    "nbtoolkit.evaluation": ("evaluate", "EvalResult"),
    "nbtoolkit.rewards": ("make_label_reward", "verify_reward_function", "lambda_handler"),
    "nbtoolkit.pipeline": ("PipelineConfig", "run_pipeline", "estimate_pipeline"),
    "nbtoolkit.stages": ("PROFILES", "STAGES", "StageSummary"),
    "nbtoolkit.estimate": ("estimate_job", "estimate_jobs", "cloud_estimate", "Estimate"),
    "nbtoolkit.plots": ("confusion_matrix_figure", "response_length_figure", "training_curve_figure",
                        "stage_table", "stage_table_styler", "training_curves_figure", "stage_stderr",
                        "per_class_figure", "per_class_table", "label_distribution_figure", "mix_share_figure",
                        "pareto_figure"),
    "nbtoolkit.workspace": ("Workspace",),
    "nbtoolkit.mixing": ("MixConfig", "GeneralDataRegistry", "mixing_extra", "mix_preset", "synthesize_rehearsal"),
    "nbtoolkit.forgetting": ("evaluate_general", "retention_probe", "GeneralEvalResult", "forgetting_table"),
    "nbtoolkit.sweeps": ("Sweep",),
    "nbtoolkit.advisor": ("advise_launch", "advise_running", "advise_job"),
    "nbtoolkit.serve": ("LocalServer", "invoke_inference"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

"""Data mixing: MixConfig (rules in docs/data-mixing.md), general-data sources, self-synthesized rehearsal,
exact batches.

    mix = MixConfig(50, {"reasoning-instruction-following": 60, "instruction-following": 30, "rai": 10})
    registry = GeneralDataRegistry(); registry.add_rehearsal()
    extra = mixing_extra(mix, registry.write("general/", mix))
    runtime.launch(JobSpec("sft_lora", config, model=..., train_file=..., extra=extra))   # run_dir/mix.json
"""

from nbtoolkit.mixing.config import (
    CATEGORIES,
    CUSTOMER,
    DEFAULT_LOCAL_WEIGHTS,
    MIX_PRESETS,
    ALL_CATEGORIES_WEIGHTS,
    MixConfig,
    MixError,
    mix_preset,
    mix_problems,
    normalize_weights,
    nova_key,
)
from nbtoolkit.mixing.prompts import GENERAL_PROMPTS, rehearsal_prompts
from nbtoolkit.mixing.registry import FileSource, GeneralDataRegistry, RehearsalSource, detect_schema, mixing_extra
from nbtoolkit.mixing.rehearsal import synthesize_rehearsal
from nbtoolkit.mixing.sampler import MixedBatchOrder, deal_rows, exact_shares, mixed_order
from nbtoolkit.mixing.training import MIX_FILE, MixedTraining, mixed_training

__all__ = [
    "CATEGORIES", "CUSTOMER", "DEFAULT_LOCAL_WEIGHTS", "GENERAL_PROMPTS", "MIX_FILE", "MIX_PRESETS",
    "ALL_CATEGORIES_WEIGHTS", "FileSource", "GeneralDataRegistry", "MixConfig", "MixError", "MixedBatchOrder",
    "MixedTraining", "RehearsalSource", "deal_rows", "detect_schema", "exact_shares", "mix_preset",
    "mix_problems", "mixed_order", "mixed_training", "mixing_extra", "normalize_weights", "nova_key",
    "rehearsal_prompts", "synthesize_rehearsal",
]

"""Know the cost before you launch: time ranges for local jobs from this machine's measured rates, and time and
money ranges for SageMaker, HyperPod and Nova jobs from instance prices.

    estimate_job(spec, calibrate=True)          # a local job: Estimate with low/high seconds and the rate's source
    estimate_cloud_job(spec, instance_type="ml.g5.2xlarge")          # hours and USD on SageMaker
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbtoolkit._lazy import lazy_exports

_EXPORTS = {
    "nbtoolkit.estimate.core": ("Estimate", "Rate", "duration_range", "format_duration"),
    "nbtoolkit.estimate.local": ("calibrate_spec", "estimate_job", "estimate_jobs", "estimate_spec",
                                 "estimate_vs_actual", "launch_estimate"),
    "nbtoolkit.estimate.rates": ("CalibrationError", "cache_path"),
    "nbtoolkit.estimate.tokens": ("TokenStats", "token_stats"),
    "nbtoolkit.estimate.cloud": ("InstancePrice", "cloud_estimate", "estimate_cloud_job", "instance_price",
                                 "price_table"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:
    from nbtoolkit.estimate.cloud import (
        InstancePrice,
        cloud_estimate,
        estimate_cloud_job,
        instance_price,
        price_table,
    )
    from nbtoolkit.estimate.core import Estimate, Rate, duration_range, format_duration
    from nbtoolkit.estimate.local import (
        calibrate_spec,
        estimate_job,
        estimate_jobs,
        estimate_spec,
        estimate_vs_actual,
        launch_estimate,
    )
    from nbtoolkit.estimate.rates import CalibrationError, cache_path
    from nbtoolkit.estimate.tokens import TokenStats, token_stats

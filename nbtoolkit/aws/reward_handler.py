"""The AWS Lambda entry point of a packaged reward: `nbtoolkit.aws.reward_handler.lambda_handler`.

With NBT_REWARD_FUNCTION unset it is nbtoolkit.rewards.lambda_handler (REWARD_NAME / REWARD_LABELS choose a
shipped reward). With NBT_REWARD_FUNCTION="module:function" it calls that function of a module packaged at the
root of the zip, with the same event handling. Standard library and nbtoolkit.rewards only.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

from nbtoolkit import rewards


def samples_from_event(event: Any) -> list[dict[str, Any]]:
    """The samples of a Lambda event: a list, {"samples": [...]}, or an API-style {"body": "<json>"}."""
    if isinstance(event, (str, bytes)):
        event = json.loads(event)
    if isinstance(event, dict):
        if "body" in event and "samples" not in event:
            return samples_from_event(event["body"])
        event = event.get("samples", [])
    if not isinstance(event, list):
        raise ValueError(f"expected a list of samples or {{'samples': [...]}}, got {type(event).__name__}")
    return event


def lambda_handler(event: Any, context: Any = None) -> list[dict[str, Any]]:
    target = os.environ.get("NBT_REWARD_FUNCTION")
    if not target:
        return rewards.lambda_handler(event, context)
    module_name, _, function_name = target.partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return function(samples_from_event(event))

"""Derived code versions: an asset's version is a digest of what shapes its output.

Dagster marks an asset partition stale when the code version it was materialized with differs from the
current one. Deriving the version from the stage's logic revision, its prompt version, the label of the model
it calls and its output-affecting settings means a changed prompt or model marks exactly that asset's
partitions stale (its downstream follows once it is rematerialized and its data version changes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Bump a stage's revision when its code changes what it writes (not for refactors).
LOGIC = {"filtered_docs": 1, "images": 1, "captions": 2, "noncontextual_captions": 2, "qa_pairs": 2,
         "unique_qa_pairs": 1, "conversations": 1, "release": 3,
         "captioner_training_pairs": 1, "contextual_captioner": 1, "captioner_evaluation": 1}
LOGIC.update(benchmark_items=1, decontaminated_mixes=1, mix_finetune=1, mix_benchmark=1, ablation_report=1)


def code_version(stage: str, *, prompt: str | None = None, models: Mapping[str, str] | None = None,
                 settings: Mapping[str, Any] | None = None) -> str:
    """`<revision>-<digest>`: readable in the UI, and different whenever any input to the output differs."""
    parts = {"logic": LOGIC[stage], "prompt": prompt, "models": dict(models or {}), "settings": dict(settings or {})}
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{LOGIC[stage]}-{digest}"

"""Where a trained captioner is published, and whether it passed its evaluation gate.

Two small JSON records under the storage root (a UPath, local or S3):

- `contextual_captioner/<recipe>/current.json`: the checkpoint the training asset last published
  (`PublishedCaptioner`); a caption backend loads the model directory it names.
- `captioner_evaluation/<recipe>/gate.json`: the evaluation's verdict on a checkpoint (`GateResult`).

Readers get `None` when nothing is published yet; a malformed record is a clear error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from viscon_dagster.core.files.atomic import write_text_atomic

CAPTIONER_ASSET = "contextual_captioner"
EVALUATION_ASSET = "captioner_evaluation"
SHA_PREFIX = 12


def captioner_label(recipe: str, sha: str) -> str:
    """The name outputs use for a trained captioner: `contextual-captioner/<recipe>@<sha12>`."""
    return f"contextual-captioner/{recipe}@{sha[:SHA_PREFIX]}"


def checkpoint_dir(recipe: str, sha: str) -> str:
    """The model directory relative to the storage root: `contextual_captioner/<recipe>/<sha12>`."""
    return f"{CAPTIONER_ASSET}/{recipe}/{sha[:SHA_PREFIX]}"


@dataclass(frozen=True)
class PublishedCaptioner:
    recipe: str
    sha: str  # content hash of the merged weights (the asset's data version)
    label: str  # captioner_label(recipe, sha)
    path: str  # checkpoint_dir(recipe, sha), relative to the storage root
    base_model: str  # label of the untuned base model
    teacher: str  # label of the teacher whose captions it learned from

    @classmethod
    def create(cls, recipe: str, sha: str, base_model: str, teacher: str) -> PublishedCaptioner:
        return cls(recipe, sha, captioner_label(recipe, sha), checkpoint_dir(recipe, sha), base_model, teacher)


@dataclass(frozen=True)
class GateResult:
    recipe: str
    checkpoint_sha: str
    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)


def current_path(store, recipe: str):
    return store / CAPTIONER_ASSET / recipe / "current.json"


def gate_path(store, recipe: str):
    return store / EVALUATION_ASSET / recipe / "gate.json"


def _write(path, record) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(asdict(record), indent=2, sort_keys=True) + "\n")


def _read(path, cls):
    if not path.exists():
        return None
    try:
        return cls(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a valid {cls.__name__} record ({e})") from e


def write_current(store, c: PublishedCaptioner) -> None:
    _write(current_path(store, c.recipe), c)


def read_current(store, recipe: str) -> PublishedCaptioner | None:
    return _read(current_path(store, recipe), PublishedCaptioner)


def write_gate(store, g: GateResult) -> None:
    _write(gate_path(store, g.recipe), g)


def read_gate(store, recipe: str) -> GateResult | None:
    return _read(gate_path(store, recipe), GateResult)

"""The trained contextual captioner as a caption model: VisCon-1M's caption backend.

    CaptionerBackend(recipe="tiny-demo", storage=storage)

At run time (first use, not at definition load) it reads what the `contextual_captioner` asset published for
its recipe (`contextual_captioner/<recipe>/current.json`) and the evaluation's verdict
(`captioner_evaluation/<recipe>/gate.json`), and refuses, with the step that fixes it, when there is no
checkpoint, when the checkpoint was not evaluated, or when it failed its gate. It loads the model directory
from storage (a local root in place; an S3 root downloaded once into a local cache) with transformers, and
every row and fingerprint names it by its label, `contextual-captioner/<recipe>@<sha12>`, never by a path.

At scale, the same published directory serves through vLLM instead, since it is a plain Hugging Face model
folder with its processor and chat template:
  * offline: download `<storage root>/contextual_captioner/<recipe>/<sha12>/` and set
    `VISCON_CAPTIONER_BACKEND=vllm`, so `VLLMOfflineBackend(model=<that folder>, model_label=<label>)` is used;
  * served: `vllm serve <that folder> --served-model-name contextual-captioner/<recipe>@<sha12>` and set
    `VISCON_CAPTIONER_BACKEND=openai` with `VISCON_CAPTIONER_BASE_URL=http://<host>:8000/v1`.
  In both cases check the gate first (`read_gate`); this backend does that for you.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from viscon_dagster.core.captioner.published import (
    EVALUATION_ASSET,
    PublishedCaptioner,
    read_current,
    read_gate,
)
from viscon_dagster.core.captioner.weights import local_model_dir
from viscon_dagster.paths import viscon_home
from viscon_dagster.resources.models.transformers_local import TransformersLocalBackend
from viscon_dagster.resources.storage import StorageResource

RECIPE_ENV = "VISCON_CAPTIONER_RECIPE"
DEFAULT_RECIPE = "tiny-demo"


def captioner_recipe() -> str:
    """The recipe whose checkpoint writes the VisCon-1M captions: $VISCON_CAPTIONER_RECIPE, default tiny-demo."""
    from viscon_dagster.core.captioner.recipes import RECIPES
    from viscon_dagster.settings import SettingError

    name = os.environ.get(RECIPE_ENV, "").strip() or DEFAULT_RECIPE
    if name not in RECIPES:
        raise SettingError(f"{RECIPE_ENV}={name!r}: not a captioner recipe; use one of {', '.join(sorted(RECIPES))}")
    return name


def captioner_cache(published: PublishedCaptioner, cache_dir: str | None = None) -> Path:
    """Where a checkpoint of an S3 storage root is kept on this machine (`$VISCON_HOME/models/captioners` by
    default), by recipe and sha."""
    cache = Path(cache_dir) if cache_dir else viscon_home() / "models" / "captioners"
    return cache / published.recipe / published.sha[:12]


def version_label(backend) -> str:
    """How the 1M captions' code version names their model. The trained captioner by recipe only: the checkpoint
    itself reaches the captions as the data version of their `contextual_captioner` dependency, which marks them
    stale when a new one is published (and is read from storage at run time, never when definitions load)."""
    return f"contextual-captioner/{backend.recipe}" if isinstance(backend, CaptionerBackend) else backend.model_id


class CaptionerNotReady(dg.Failure):
    """No usable checkpoint for the recipe: none published, not evaluated, or its gate failed."""


def usable_captioner(store, recipe: str) -> PublishedCaptioner:
    """The recipe's published checkpoint if its evaluation gate passed for that very checkpoint; else a
    CaptionerNotReady naming what is missing."""
    published = read_current(store, recipe)
    if published is None:
        raise CaptionerNotReady(
            f"no trained captioner for recipe {recipe!r}: materialize contextual_captioner[{recipe}] (and "
            f"{EVALUATION_ASSET}[{recipe}]) before the VisCon-1M captions")
    gate = read_gate(store, recipe)
    if gate is None or gate.checkpoint_sha != published.sha:
        evaluated = f" (the last gate was for {gate.checkpoint_sha[:12]})" if gate else ""
        raise CaptionerNotReady(
            f"{published.label} has not been evaluated{evaluated}: materialize {EVALUATION_ASSET}[{recipe}] first")
    if not gate.passed:
        failed = [f"{r['name']}: {r['detail']}" for r in gate.metrics.get("rules", []) if not r.get("passed")]
        scores = {k: gate.metrics[k] for k in sorted(gate.metrics) if "bleu" in k or "rouge" in k} or "no scores"
        why = f"failed rules: {'; '.join(failed)}; scores: {scores}" if failed else \
            f"it does not beat the untuned base: {scores}"
        raise CaptionerNotReady(
            f"{published.label} failed its evaluation gate ({why}); the "
            f"VisCon-1M captions are not made with it. Train a better checkpoint (another recipe or more teacher "
            f"captions) and evaluate it")
    return published


class CaptionerBackend(TransformersLocalBackend):
    """Caption with the trained captioner of `recipe` (transformers; see the module docstring for vLLM)."""

    model: str = Field("contextual-captioner", description="unused: the checkpoint comes from `recipe`")
    recipe: str = Field(DEFAULT_RECIPE, description=f"the captioner recipe whose checkpoint captions "
                                                    f"(${RECIPE_ENV}, default {DEFAULT_RECIPE})")
    storage: StorageResource
    cache_dir: str | None = Field(None, description="where checkpoints of an S3 storage root are downloaded "
                                                    "(default $VISCON_HOME/models/captioners)")

    _published: PublishedCaptioner | None = PrivateAttr(None)

    def published(self) -> PublishedCaptioner:
        """The checkpoint this backend captions with, read (and checked) once per run."""
        if self._published is None:
            self._published = usable_captioner(self.storage.root_path(), self.recipe)
        return self._published

    @property
    def model_id(self) -> str:
        return self.published().label

    def _checkpoint(self) -> str:
        published = self.published()
        remote = self.storage.path(published.path)
        if not (remote / "config.json").exists():
            raise CaptionerNotReady(f"{published.label} is published but its model directory is missing from "
                                    f"storage ({published.path}): materialize contextual_captioner[{self.recipe}]")
        return local_model_dir(remote, captioner_cache(published, self.cache_dir))

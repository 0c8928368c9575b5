"""Say what is missing when a model or tokenizer names a local folder that is not there.

Without this, `from_pretrained('/abs/.viscon/models/tiny-lm')` on a fresh `VISCON_HOME` fails with
Hugging Face's "Repo id must be in the form 'repo_name'…", which tells a newcomer nothing.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from viscon_dagster.core.models.labels import is_local_path

MODEL_SETTING = "VISCON_CAPTION_MODEL / VISCON_QA_MODEL"  # where the environment names a model


def require_local_model(name_or_path: str, what: str, setting: str) -> None:
    """Fail with the command that makes the folder, or the setting that points elsewhere."""
    if not is_local_path(name_or_path):
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    raise dg.Failure(
        f"{what} {str(path)!r} does not exist. Build the tiny local models with `viscon models tiny` "
        f"(they go under $VISCON_HOME/models), or set {setting} to a hub id or a checkpoint folder.")

"""Where things live by default: one local working folder, `.viscon/` (or `$VISCON_HOME`).

    .viscon/storage/       the storage root (file://) unless VISCON_STORAGE_ROOT says otherwise
    .viscon/dagster_home/  the SQLite Dagster instance used by `viscon demo` (DAGSTER_HOME)
    .viscon/models/        tiny local models built by `viscon models tiny`
    .viscon/sample/        the bundled sample corpus written by `viscon sample`
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "VISCON_HOME"


def viscon_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.cwd() / ".viscon").resolve()


def models_dir() -> Path:
    return viscon_home() / "models"


def sample_dir() -> Path:
    return viscon_home() / "sample"


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or viscon_home() / "dagster_home").resolve()

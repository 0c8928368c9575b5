"""The persistent local Dagster instance (SQLite under DAGSTER_HOME, `.viscon/dagster_home` by default) and the
definitions' storage as a run sees it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from viscon_dagster import paths
from viscon_dagster.core.files.atomic import write_text_atomic
from viscon_dagster.instance_policy import LOCAL, InstanceSizes, apply_pool_limits, concurrency, run_monitoring

HEADER = """\
# Written by `viscon` because this DAGSTER_HOME had no dagster.yaml; yours is never overwritten.
# Storage: SQLite in this folder (Dagster's default); Postgres: docs/operations.md.
# Telemetry is Dagster's default; opt out with `telemetry: {enabled: false}`.
# The policy below is viscon_dagster/instance_policy.py: one run per shard at a time (dagster/partition, and the
# range tags of backfill runs), run monitoring by dagster-daemon (which `viscon ui` and `dagster dev` start), the
# slots of ended runs given back. The `gpu` pool's limit (the GPUs) lives in the instance's storage:
# `dagster instance concurrency set gpu N`; `viscon` sets it to 1 when the pool has no limit yet.
"""


def default_instance_yaml(sizes: InstanceSizes = LOCAL) -> str:
    body = {"concurrency": concurrency(sizes), "run_monitoring": run_monitoring(sizes),
            "run_retries": {"enabled": False}}  # a failed partition is retried by relaunching its backfill
    return HEADER + yaml.safe_dump(body, sort_keys=False)


def ensure_instance_yaml(home: Path) -> bool:
    """Write the default dagster.yaml when `home` has none (or the empty one earlier versions wrote)."""
    path = home / "dagster.yaml"
    if path.exists() and path.stat().st_size:
        return False
    write_text_atomic(path, default_instance_yaml())
    print(f"wrote {path} (SQLite instance, run monitoring on)", file=sys.stderr)
    return True


def local_instance():
    """The persistent Dagster instance, its dagster.yaml written and its pool limits set on first use."""
    from dagster import DagsterInstance

    home = paths.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    ensure_instance_yaml(home)
    os.environ["DAGSTER_HOME"] = str(home)
    instance = DagsterInstance.get()
    apply_pool_limits(instance, LOCAL)
    return instance


@contextmanager
def resolved_storage() -> Iterator:
    """The definitions' storage resource as Dagster resolves it for a run (EnvVars read), for plain code."""
    import dagster as dg

    from viscon_dagster.definitions import defs

    with dg.build_resources({"storage": defs.resources["storage"]}) as resources:
        yield resources.storage

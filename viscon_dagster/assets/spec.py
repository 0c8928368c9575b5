"""What a chain is made of: its partitions, models, key prefix, group and release (`ChainSpec`), read by every
asset factory of the chain (assets/docs.py, images.py, chain.py, exports.py)."""

import os
from dataclasses import dataclass, field

import dagster as dg

from viscon_dagster.automation import shard_condition
from viscon_dagster.settings import SettingError

PARTITIONS_PER_RUN_ENV = "VISCON_PARTITIONS_PER_RUN"
DEFAULT_PARTITIONS_PER_RUN = 50  # 3,000 shards: 60 runs per stage


def partitions_per_run() -> int:
    """Shards one backfill run carries (`BackfillPolicy.multi_run(k)`), from VISCON_PARTITIONS_PER_RUN."""
    value = os.environ.get(PARTITIONS_PER_RUN_ENV, "").strip()
    if not value:
        return DEFAULT_PARTITIONS_PER_RUN
    if not value.isdigit() or int(value) < 1:
        raise SettingError(f"{PARTITIONS_PER_RUN_ENV}={value!r}: expected a whole number of shards per run (≥ 1)")
    return int(value)


@dataclass(frozen=True)
class ChainSpec:
    partitions_def: dg.PartitionsDefinition
    caption_model_key: str = "caption_model"   # the resource that writes this chain's captions
    qa_model_key: str = "qa_model"
    key_prefix: tuple[str, ...] = ()           # e.g. ("viscon_1m",)
    group: str = "viscon_100k"
    release_name: str = "viscon_100k_release"
    caption_deps: tuple[dg.AssetDep, ...] = ()  # extra deps of the caption asset (the 1M chain's captioner)
    partitions_per_run: int = field(default_factory=partitions_per_run)

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, name])

    def name(self, base: str) -> str:
        """A job or selection name of this chain: `shard_chain` for the 100K chain, `viscon_1m_shard_chain`."""
        return "_".join([*self.key_prefix, base])

    @property
    def release_job(self) -> str:
        """`release` for the 100K chain; `<release name>_job` for another (a job cannot share its asset's name)."""
        return "release" if not self.key_prefix else f"{self.release_name}_job"

    @property
    def release_key(self) -> dg.AssetKey:
        return dg.AssetKey(self.release_name)

    def shard_asset(self, key: dg.AssetKey, gpu: bool = False, automated: bool = True,
                    optional_deps: tuple[dg.AssetKey, ...] = ()) -> dict:
        """The keyword arguments every per-shard asset of this chain shares (GPU ones: `**GPU` too)."""
        return {"key": key, "partitions_def": self.partitions_def, "group_name": self.group,
                "backfill_policy": dg.BackfillPolicy.multi_run(self.partitions_per_run),
                "automation_condition": shard_condition(gpu, optional_deps) if automated else None}

    def sibling(self, name: str) -> str:
        """The storage folder of one of this chain's assets (`viscon_1m/captions`)."""
        return "/".join(self.key(name).path)


def teacher_chain() -> ChainSpec:
    """VisCon-100K: the chain the teacher captions (keys unprefixed), whose captions train the captioner."""
    from viscon_dagster.partitions import obelics_shards

    return ChainSpec(partitions_def=obelics_shards)

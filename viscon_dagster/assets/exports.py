"""The release: every materialized shard of a chain's conversations, exported (stage 9).

Unpartitioned; it reads the shards' parquet files from storage (`deps`, not an in-memory fan-in),
so a release of thousands of shards streams shard by shard.
"""

import dagster as dg

from viscon_dagster.core.exports import FORMATS, export_conversations, push_dataset
from viscon_dagster.core.leakage import summarize
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.core.parquet_io import read_parquet
from viscon_dagster.resources.storage import StorageResource


class ReleaseConfig(dg.Config):
    formats: list[str] = list(FORMATS)
    mixes: list[str] | None = None       # default: every mix the conversations hold
    test_fraction: float = 0.05          # share of pages (by url hash) in the test split
    split_seed: int = 0
    pretty_name: str = "VisCon (reproduction)"
    push_to: str | None = None           # hf://datasets/org/name, or any fsspec URL


def release_asset(name: str, conversations: dg.AssetKey, unique_qa: dg.AssetKey, group: str):
    @dg.asset(name=name, deps=[conversations, unique_qa], group_name=group, kinds={"parquet", "json"},
              code_version="1",
              description="LLaVA JSON + images, Idefics chat parquet with embedded images, HF parquet shards "
                          "with a dataset card; train/test split by page url. Optionally pushed to the Hub.")
    def _release(context: dg.AssetExecutionContext, config: ReleaseConfig, storage: StorageResource,
                 hub: HubResource):
        shards = sorted(context.instance.get_materialized_partitions(conversations))
        if not shards:
            raise dg.Failure(f"no materialized partition of {conversations.to_user_string()} to release")

        def tables(key):
            for shard in shards:
                yield read_parquet(storage.path(*key.path, f"{shard}.parquet"))

        leakage = [v for t in tables(unique_qa) for v, kept in zip(t["leakage"].to_pylist(), t["kept"].to_pylist())
                   if kept and v is not None]
        out = storage.path(*context.asset_key.path)
        summary = export_conversations(tables(conversations), storage.root_path(), out,
                                       formats=config.formats, mixes=config.mixes,
                                       test_fraction=config.test_fraction, split_seed=config.split_seed,
                                       leakage=summarize(leakage), pretty_name=config.pretty_name)
        metadata = {"shards": len(shards), "path": dg.MetadataValue.path(str(out)),
                    **{k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v
                       for k, v in summary.metadata().items()}}
        if config.push_to:
            pushed = push_dataset(out / "hf", config.push_to, storage_options=storage.options_for(config.push_to),
                                  token=hub.token, private=hub.private, endpoint=hub.endpoint)
            metadata["pushed_to"] = pushed["target"]
        return dg.MaterializeResult(metadata=metadata)

    return _release

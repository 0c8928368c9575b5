"""The release: every materialized shard of a chain's conversations, exported (stage 9).

Unpartitioned; it reads the shards' parquet files from storage (`deps`, not an in-memory fan-in),
so a release of thousands of shards streams shard by shard.
"""

import dagster as dg

from viscon_dagster.assets.metadata import as_metadata
from viscon_dagster.assets.per_shard import config_defaults
from viscon_dagster.core.chain.leakage import leakage_summary
from viscon_dagster.core.exports.preview import DEFAULT_PER_MIX, PreviewSources, records_markdown, write_preview
from viscon_dagster.core.exports.release import FORMATS, export_conversations, push_dataset
from viscon_dagster.core.files.parquet import read_parquet
from viscon_dagster.core.versions import code_version
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.resources.storage import StorageResource


class ReleaseConfig(dg.Config):
    formats: list[str] = list(FORMATS)
    mixes: list[str] | None = None       # default: every mix the conversations hold
    test_fraction: float = 0.05          # share of pages (by url hash) in the test split
    split_seed: int = 0
    pretty_name: str = "VisCon (reproduction)"
    push_to: str | None = None           # hf://datasets/org/name, or any fsspec URL
    preview_per_mix: int = DEFAULT_PER_MIX  # records per mix in preview.html
    preview_seed: int = 0


IMAGES = dg.AssetKey("images")


def _folder(key: dg.AssetKey) -> str:
    return "/".join(key.path)


def release_asset(name: str, conversations: dg.AssetKey, unique_qa: dg.AssetKey, group: str, *,
                  captions: dg.AssetKey | None = None, qa_pairs: dg.AssetKey | None = None,
                  images: dg.AssetKey = IMAGES, rejects: str = "filtered_docs_rejects",
                  automation_condition: dg.AutomationCondition | None = None):
    """The release; `captions`, `qa_pairs`, `images` and `rejects` are read (not depended on) for its preview.

    `captions` and `qa_pairs` default to the siblings of `conversations` (same key prefix).
    """
    prefix = conversations.path[:-1]
    preview_sources = {"conversations": _folder(conversations), "unique_qa_pairs": _folder(unique_qa),
                       "captions": _folder(captions or dg.AssetKey([*prefix, "captions"])),
                       "qa_pairs": _folder(qa_pairs or dg.AssetKey([*prefix, "qa_pairs"])),
                       "images": _folder(images), "rejects": rejects}

    @dg.asset(name=name, deps=[conversations, unique_qa], group_name=group, kinds={"parquet", "json"},
              automation_condition=automation_condition,
              code_version=code_version("release", settings=config_defaults(ReleaseConfig, "push_to")),
              description="LLaVA JSON + images, Idefics chat parquet with embedded images, HF parquet shards "
                          "with a dataset card; train/test split by page url; preview.html, a gallery of a "
                          "seeded sample per mix with the stage counts. Optionally pushed to the Hub.")
    def _release(context: dg.AssetExecutionContext, config: ReleaseConfig, storage: StorageResource,
                 hub: HubResource):
        shards = sorted(context.instance.get_materialized_partitions(conversations))
        if not shards:
            raise dg.Failure(f"no materialized partition of {conversations.to_user_string()} to release")

        def tables(key):
            for shard in shards:
                yield read_parquet(storage.partition_path(key, shard))

        leakage = [v for t in tables(unique_qa) for v, kept in zip(t["leakage"].to_pylist(), t["kept"].to_pylist())
                   if kept and v is not None]
        out = storage.path(*context.asset_key.path)
        summary = export_conversations(tables(conversations), storage.root_path(), out,
                                       formats=config.formats, mixes=config.mixes,
                                       test_fraction=config.test_fraction, split_seed=config.split_seed,
                                       leakage=leakage_summary(leakage), pretty_name=config.pretty_name)
        metadata = {"shards": len(shards), "path": dg.MetadataValue.path(str(out)),
                    **as_metadata(summary.metadata())}
        released = next(iter(summary.counts.values()), None)
        preview = write_preview(PreviewSources(storage.root_path(), **preview_sources), shards, out,
                                title=config.pretty_name, per_mix=config.preview_per_mix, seed=config.preview_seed,
                                mixes=config.mixes, released=released)
        metadata.update(preview_html=dg.MetadataValue.path(preview.location),
                        preview=dg.MetadataValue.md(records_markdown(preview.records)), **preview.metadata())
        if config.push_to:
            pushed = push_dataset(out / "hf", config.push_to, storage_options=storage.options_for(config.push_to),
                                  token=hub.token, private=hub.private, endpoint=hub.endpoint)
            metadata["pushed_to"] = pushed["target"]
        return dg.MaterializeResult(metadata=metadata)

    return _release

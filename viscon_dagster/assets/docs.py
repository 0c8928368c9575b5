"""`filtered_docs`: one source shard → the documents worth captioning (stage 2 of the pipeline)."""

import time
from collections.abc import Mapping

import dagster as dg

from viscon_dagster.assets.metadata import table_metadata
from viscon_dagster.assets.per_shard import ShardOutput, config_defaults, materialize_shards
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.checks.docs_checks import check_filtered_docs, filtered_docs_check_spec
from viscon_dagster.core.documents.filtering import REJECTS_SCHEMA, FilterSettings, filter_shard
from viscon_dagster.core.documents.obelics import REJECT_REASONS
from viscon_dagster.core.files.parquet import ParquetStreamWriter
from viscon_dagster.core.shards.registry import lookup
from viscon_dagster.core.shards.sources import iter_record_batches
from viscon_dagster.core.versions import code_version
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.resources.tokenizer import TokenizerResource

REJECTS_DIR = "filtered_docs_rejects"
FILTERED_DOCS = dg.AssetKey("filtered_docs")


class FilteredDocsConfig(dg.Config):
    max_text_tokens: int = 2000
    min_images: int = 1
    docs_per_shard: int = 1000
    seed: int = 0
    batch_size: int = 1024
    reader: str | None = None  # "pyarrow" or "datasets"; by default chosen from the shard URL


def filter_one_shard(storage: StorageResource, tokenizer: TokenizerResource, config: FilteredDocsConfig,
                     shard: str, key: dg.AssetKey = FILTERED_DOCS) -> ShardOutput:
    """One shard's documents, its rejects written beside them (also the benchmark's plain-loop baseline)."""
    rejects_key = dg.AssetKey([*key.path[:-1], REJECTS_DIR])
    url = lookup(storage.root_path(), shard)
    settings = FilterSettings(config.max_text_tokens, config.min_images, config.docs_per_shard, config.seed)
    rejects_path = storage.partition_path(rejects_key, shard)
    started = time.perf_counter()
    # opened and its first batch read before the rejects file is: a bad shard fails leaving the last one intact
    batches = iter_record_batches(url, storage.options_for(url), config.batch_size, config.reader)
    with ParquetStreamWriter(rejects_path, REJECTS_SCHEMA) as rejects:
        table, stats = filter_shard(batches, shard, settings, tokenizer.count_tokens, rejects.write)
    elapsed = time.perf_counter() - started
    return ShardOutput(table, {
        **table_metadata(table, ["doc_id", "url", "n_images", "text_tokens", "texts"]),
        "source_url": url,
        "tokenizer": tokenizer.label,
        "rows_in": stats.rows_in,
        "rows_valid": stats.valid,
        "rows_eligible": stats.eligible,
        "rows_out": stats.kept,
        "rows_not_sampled": stats.not_sampled,
        "rows_rejected": sum(stats.rejects.values()),
        **{f"rejects/{reason}": stats.rejects.get(reason, 0) for reason in REJECT_REASONS},
        "rejects_path": dg.MetadataValue.path(str(rejects_path)),
        "docs_per_second": round(stats.rows_in / elapsed, 1) if elapsed else 0.0,
    }, [check_filtered_docs(table.to_pandas(), config.max_text_tokens, config.min_images, key)])


def filtered_docs_asset(spec: "ChainSpec", labels: Mapping[str, str]) -> dg.AssetsDefinition:
    key, rejects_key = spec.key("filtered_docs"), spec.key(REJECTS_DIR)

    @dg.asset(
        **spec.shard_asset(key),
        check_specs=[filtered_docs_check_spec(key)],
        kinds={"parquet"},
        code_version=code_version("filtered_docs", models={"tokenizer": labels.get("tokenizer")},
                                  settings=config_defaults(FilteredDocsConfig, "batch_size", "reader")),
        description="Valid OBELICS documents within the token budget, sampled by a seeded hash of the page URL. "
                    f"Every rejected row is written with its reason to {'/'.join(rejects_key.path)}/<shard>.parquet.",
    )
    def _filtered_docs(context: dg.AssetExecutionContext, config: FilteredDocsConfig,
                       storage: StorageResource, tokenizer: TokenizerResource) -> dg.MaterializeResult:
        def one(shard: str) -> ShardOutput:
            out = filter_one_shard(storage, tokenizer, config, shard, key)
            context.log.info(f"{shard}: {out.metadata['rows_in']} rows in, {out.metadata['rows_out']} kept, "
                             f"{out.metadata['rows_rejected']} rejected")
            return out

        return materialize_shards(context, storage, one)

    return _filtered_docs

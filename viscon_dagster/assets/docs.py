"""`filtered_docs`: one source shard → the documents worth captioning (PIPELINE.md stage 2)."""

import time

import dagster as dg

from viscon_dagster.assets.metadata import table_metadata
from viscon_dagster.checks.docs_checks import check_filtered_docs, filtered_docs_check_spec
from viscon_dagster.core.documents.filtering import REJECTS_SCHEMA, FilterSettings, filter_shard
from viscon_dagster.core.documents.obelics import REJECT_REASONS
from viscon_dagster.core.files.parquet import ParquetStreamWriter
from viscon_dagster.core.shards.registry import lookup
from viscon_dagster.core.shards.sources import iter_record_batches
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.resources.tokenizer import TokenizerResource

REJECTS_DIR = "filtered_docs_rejects"


class FilteredDocsConfig(dg.Config):
    max_text_tokens: int = 2000
    min_images: int = 1
    docs_per_shard: int = 1000
    seed: int = 0
    batch_size: int = 1024
    reader: str | None = None  # "pyarrow" or "datasets"; by default chosen from the shard URL


@dg.asset(
    partitions_def=obelics_shards,
    check_specs=[filtered_docs_check_spec()],
    group_name="viscon_100k",
    kinds={"parquet"},
    code_version="1",
    description="Valid OBELICS documents within the token budget, sampled by a seeded hash of the page URL. "
                "Every rejected row is written with its reason to filtered_docs_rejects/<shard>.parquet.",
)
def filtered_docs(context: dg.AssetExecutionContext, config: FilteredDocsConfig,
                  storage: StorageResource, tokenizer: TokenizerResource):
    shard = context.partition_key
    url = lookup(storage.root_path(), shard)
    settings = FilterSettings(config.max_text_tokens, config.min_images, config.docs_per_shard, config.seed)
    rejects_path = storage.partition_path(dg.AssetKey(REJECTS_DIR), shard)
    started = time.perf_counter()
    # opened and its first batch read before the rejects file is: a bad shard fails leaving the last one intact
    batches = iter_record_batches(url, storage.options_for(url), config.batch_size, config.reader)
    with ParquetStreamWriter(rejects_path, REJECTS_SCHEMA) as rejects:
        table, stats = filter_shard(batches, shard, settings, tokenizer.count_tokens, rejects.write)
    elapsed = time.perf_counter() - started
    context.log.info(f"{shard}: {stats.rows_in} rows in, {stats.kept} kept, {sum(stats.rejects.values())} rejected")

    return dg.MaterializeResult(value=table, metadata={
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
    }, check_results=[check_filtered_docs(table.to_pandas(), config.max_text_tokens, config.min_images)])

"""`images`: fetch, vet, normalise and de-duplicate every image of a shard's documents (stage 3)."""

import dagster as dg
import pyarrow as pa

from viscon_dagster.assets.metadata import as_metadata, table_metadata
from viscon_dagster.checks.image_checks import check_images, check_success_rate, image_check_specs
from viscon_dagster.core.images import ImageRequest
from viscon_dagster.core.images.url_counts import load_url_doc_counts, save_url_doc_counts
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.resources.image_fetcher import ImageFetcherResource
from viscon_dagster.resources.storage import StorageResource


class ImagesConfig(dg.Config):
    success_rate_threshold: float = 0.5  # below it the success-rate check warns


def image_requests(docs: pa.Table) -> list[ImageRequest]:
    return [ImageRequest(doc["doc_id"], doc["url"], info["position"], info["url"], info["alt_text"])
            for doc in docs.select(["doc_id", "url", "image_info"]).to_pylist()
            for info in doc["image_info"]]


@dg.asset(
    partitions_def=obelics_shards,
    check_specs=image_check_specs(),
    group_name="viscon_100k",
    kinds={"parquet", "jpeg"},
    code_version="1",
    description="One row per (document, image position) with its status; normalised JPEGs under images/<sha[:2]>/.",
)
def images(context: dg.AssetExecutionContext, config: ImagesConfig, filtered_docs: pa.Table,
           storage: StorageResource, image_fetcher: ImageFetcherResource):
    shard = context.partition_key
    store = storage.root_path()
    requests = image_requests(filtered_docs)
    seen = load_url_doc_counts(store, exclude_shards=[shard], only_urls={r.image_url for r in requests})
    result = image_fetcher.fetch(requests, store, seen, shard=shard,
                                 s3_storage_options=storage.s3_options())
    save_url_doc_counts(store, shard, result.url_doc_counts)
    summary = result.metadata()
    context.log.info(f"{shard}: {summary['kept_images']} images kept of {summary['rows']} ({summary['status_counts']})")
    return dg.MaterializeResult(value=result.table, metadata={
        **table_metadata(result.table, ["doc_id", "position", "status", "width", "height", "image_url"]),
        **as_metadata(summary), **{f"status/{k}": v for k, v in summary["status_counts"].items()},
    }, check_results=[
        check_images(result.table.to_pandas(), image_fetcher.min_side, image_fetcher.max_side),
        check_success_rate(result.success_rate, config.success_rate_threshold, summary["status_counts"])])

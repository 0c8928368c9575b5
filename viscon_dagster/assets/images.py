"""`images`: fetch, vet, normalise and de-duplicate every image of a shard's documents (stage 3)."""

from collections.abc import Mapping

import dagster as dg
import pyarrow as pa

from viscon_dagster.assets.metadata import as_metadata, table_metadata
from viscon_dagster.assets.per_shard import ShardOutput, config_defaults, materialize_shards, read_input
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.checks.image_checks import check_images, check_success_rate, image_check_specs
from viscon_dagster.core.images import ImageRequest
from viscon_dagster.core.images.url_counts import load_url_doc_counts, save_url_doc_counts
from viscon_dagster.core.versions import code_version
from viscon_dagster.resources.image_fetcher import ImageFetcherResource
from viscon_dagster.resources.storage import StorageResource


class ImagesConfig(dg.Config):
    success_rate_threshold: float = 0.5  # below it the success-rate check warns


def image_requests(docs: pa.Table) -> list[ImageRequest]:
    return [ImageRequest(doc["doc_id"], doc["url"], info["position"], info["url"], info["alt_text"])
            for doc in docs.select(["doc_id", "url", "image_info"]).to_pylist()
            for info in doc["image_info"]]


def images_asset(spec: "ChainSpec", labels: Mapping[str, str]) -> dg.AssetsDefinition:
    key, docs_key = spec.key("images"), spec.key("filtered_docs")

    @dg.asset(
        **spec.shard_asset(key),
        deps=[docs_key],
        check_specs=image_check_specs(key),
        kinds={"parquet", "jpeg"},
        code_version=code_version("images", models={"image_fetcher": labels.get("image_fetcher")},
                                  settings=config_defaults(ImagesConfig, "success_rate_threshold")),
        description="One row per (document, image position) with its status; normalised JPEGs under "
                    "images/<sha[:2]>/.",
    )
    def _images(context: dg.AssetExecutionContext, config: ImagesConfig, storage: StorageResource,
                image_fetcher: ImageFetcherResource) -> dg.MaterializeResult:
        store = storage.root_path()

        def one(shard: str) -> ShardOutput:
            requests = image_requests(read_input(storage, docs_key, shard))
            seen = load_url_doc_counts(store, exclude_shards=[shard], only_urls={r.image_url for r in requests})
            result = image_fetcher.fetch(requests, store, seen, shard=shard, s3_storage_options=storage.s3_options())
            save_url_doc_counts(store, shard, result.url_doc_counts)
            summary = result.metadata()
            context.log.info(f"{shard}: {summary['kept_images']} images kept of {summary['rows']} "
                             f"({summary['status_counts']})")
            return ShardOutput(result.table, {
                **table_metadata(result.table, ["doc_id", "position", "status", "width", "height", "image_url"]),
                **as_metadata(summary), **{f"status/{k}": v for k, v in summary["status_counts"].items()},
            }, [check_images(result.table.to_pandas(), image_fetcher.min_side, image_fetcher.max_side, key),
                check_success_rate(result.success_rate, config.success_rate_threshold, summary["status_counts"], key)])

        return materialize_shards(context, storage, one)

    return _images

"""The release: every materialized shard of a chain's conversations, exported (stage 9).

Unpartitioned; it reads the shards' parquet files from storage (`deps`, not an in-memory fan-in),
so a release of thousands of shards streams shard by shard. Each run writes a new version folder
(`<release>/versions/<version>/`) and makes it current by rewriting `<release>/CURRENT` only once every
format, the card, the preview and the manifest are written (core/exports/versions.py); the Hub push reads
that complete version.
"""

import dagster as dg
import pyarrow.parquet as pq

from viscon_dagster.assets.metadata import as_metadata
from viscon_dagster.assets.per_shard import config_defaults
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.automation import release_condition
from viscon_dagster.core.ablation.report import card_banner, card_section, preview_html, read_report
from viscon_dagster.core.chain.leakage import leakage_summary
from viscon_dagster.core.exports.preview import records_markdown, write_preview
from viscon_dagster.core.exports.preview_records import DEFAULT_PER_MIX, PreviewSources
from viscon_dagster.core.exports.release import FORMATS, export_conversations, push_release
from viscon_dagster.core.exports.split import DEFAULT_TEST_FRACTION
from viscon_dagster.core.exports.versions import DEFAULT_KEEP, new_version_id, publish, version_path, write_manifest
from viscon_dagster.core.files.atomic import is_local, local_path
from viscon_dagster.core.versions import code_version
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.resources.storage import StorageResource


class ReleaseConfig(dg.Config):
    formats: list[str] = list(FORMATS)
    mixes: list[str] | None = None       # default: every mix the conversations hold
    test_fraction: float = DEFAULT_TEST_FRACTION  # share of pages (by url hash) in the test split
    split_seed: int = 0
    pretty_name: str = "VisCon (reproduction)"
    push_to: str | None = None           # hf://datasets/org/name, or any fsspec URL
    preview_per_mix: int = DEFAULT_PER_MIX  # records per mix in preview.html
    preview_seed: int = 0
    keep_versions: int = DEFAULT_KEEP    # complete versions kept, the current one included (older ones deleted)


def _location(path) -> str:
    """A local path as a path, an object-store path as its URL."""
    return local_path(path) if is_local(path) else str(path)


def release_asset(spec: ChainSpec):
    """The chain's release; its captions, Q&A, images and rejects are read (not depended on) for the preview."""
    conversations, unique_qa = spec.key("conversations"), spec.key("unique_qa_pairs")
    preview_sources = {name: spec.sibling(name) for name in ("conversations", "unique_qa_pairs", "captions",
                                                              "qa_pairs", "images")}
    preview_sources["rejects"] = spec.sibling("filtered_docs_rejects")

    @dg.asset(name=spec.release_name, deps=[conversations, unique_qa], group_name=spec.group,
              kinds={"parquet", "json"}, automation_condition=release_condition(),
              code_version=code_version("release", settings=config_defaults(ReleaseConfig, "push_to", "keep_versions")),
              description="LLaVA JSON + images, Idefics chat parquet with embedded images, HF parquet shards "
                          "with a dataset card, a README per format with its trainer's invocation; train/test split "
                          "by page url (both splits in every config); preview.html, a gallery of a "
                          "seeded sample per mix with the stage counts. Written whole into a new version folder, "
                          "made current by the release's CURRENT file; optionally pushed to the Hub.")
    def _release(context: dg.AssetExecutionContext, config: ReleaseConfig, storage: StorageResource,
                 hub: HubResource):
        shards = sorted(context.instance.get_materialized_partitions(conversations))
        if not shards:
            raise dg.Failure(f"no materialized partition of {conversations.to_user_string()} to release")

        def tables(key, columns=None):
            for shard in shards:
                with storage.partition_path(key, shard).open("rb") as f:
                    yield pq.read_table(f, columns=columns)

        leakage = [v for t in tables(unique_qa) for v, kept in zip(t["leakage"].to_pylist(), t["kept"].to_pylist())
                   if kept and v is not None]
        if config.keep_versions < 1:
            raise dg.Failure(f"keep_versions must be at least 1 (the current version), got {config.keep_versions}")
        release = storage.path(*context.asset_key.path)
        version = new_version_id(salt=context.run_id)
        out = version_path(release, version)
        context.log.info(f"writing release version {version}")
        ablation = read_report(storage.path(spec.sibling("ablation_report")))  # the chain's last ablation, if any
        summary = export_conversations(lambda columns=None: tables(conversations, columns), storage.root_path(), out,
                                       formats=config.formats, mixes=config.mixes,
                                       test_fraction=config.test_fraction, split_seed=config.split_seed,
                                       leakage=leakage_summary(leakage), pretty_name=config.pretty_name,
                                       version=version, release_name=spec.release_name,
                                       card_notes=card_section(ablation) if ablation else "",
                                       card_banner=card_banner(ablation) if ablation else "")
        released = next(iter(summary.counts.values()), None)
        preview = write_preview(PreviewSources(storage.root_path(), **preview_sources), shards, out,
                                title=config.pretty_name, per_mix=config.preview_per_mix, seed=config.preview_seed,
                                mixes=config.mixes, released=released, version=version,
                                notes_html=preview_html(ablation) if ablation else "")
        # the split: the page-URL hash with these settings, but for the pages moved so every config has both
        split = {"test_fraction": config.test_fraction, "seed": config.split_seed, "moved": summary.moved_pages}
        write_manifest(out, version, formats=list(summary.counts), counts=summary.counts, shards=len(shards),
                       split=split, records_in=summary.records_in, images=summary.images)
        published = publish(release, version, keep=config.keep_versions)
        if not published.became_current:
            context.log.warning(f"release version {version} is complete but not current: {published.current}, "
                                "written by a release that started later, was published first")
        metadata = {"shards": len(shards), "path": dg.MetadataValue.path(_location(out)),
                    "release_path": dg.MetadataValue.path(_location(release)),
                    **as_metadata(published.metadata()), **as_metadata(summary.metadata())}
        metadata.update(preview_html=dg.MetadataValue.path(preview.location),
                        preview=dg.MetadataValue.md(records_markdown(preview.records)), **preview.metadata())
        if ablation:  # the card's verdict, where a sensor or a reader of the run can see it
            metadata["ablation_recommended"] = str(ablation["gate"]["recommended"])
        if config.push_to and published.became_current:
            pushed = push_release(release, version, config.push_to,
                                  storage_options=storage.options_for(config.push_to),
                                  token=hub.token, private=hub.private, endpoint=hub.endpoint)
            metadata["pushed_to"] = pushed["target"]
        elif config.push_to:
            context.log.warning(f"not pushed to {config.push_to}: version {version} is not the current one")
        return dg.MaterializeResult(metadata=metadata)

    return _release

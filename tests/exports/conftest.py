"""Two shards of synthetic samples with real JPEGs in a local storage root, their conversation
tables for every mix, and one full export (all formats) shared by the read-only tests."""

from __future__ import annotations

import pytest
from upath import UPath

from tests.chain.conversation_samples import samples, write_images
from viscon_dagster.core.chain.conversations import MIXES, build_conversations
from viscon_dagster.core.exports.card import leakage_by_kind
from viscon_dagster.core.exports.release import export_conversations

TEST_FRACTION = 0.3
MAX_SHARD_BYTES = 12_000  # a few rows per shard, so every config has several shards


def shard_samples() -> list[list[dict]]:
    return [samples(6, 2, "shard-0"), samples(6, 2, "shard-1", doc_offset=6)]


def conversation_tables(shards: list[list[dict]]):
    return [build_conversations(rows, MIXES, seed=0).table() for rows in shards]


@pytest.fixture(scope="session")
def shards():
    return shard_samples()


@pytest.fixture(scope="session")
def tables(shards):
    return conversation_tables(shards)


@pytest.fixture(scope="session")
def storage_root(tmp_path_factory, shards) -> UPath:
    root = UPath(tmp_path_factory.mktemp("storage"))
    write_images(root, [s for shard in shards for s in shard])
    return root


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tables, storage_root, shards):
    out = UPath(tmp_path_factory.mktemp("export"))
    summary = export_conversations(tables, storage_root, out, test_fraction=TEST_FRACTION,
                                   max_shard_bytes=MAX_SHARD_BYTES,
                                   leakage=leakage_by_kind(s for shard in shards for s in shard))
    return out, summary

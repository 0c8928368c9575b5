import random
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from viscon_dagster.core.documents.filtering import FilterSettings, filter_shard
from viscon_dagster.core.shards.sources import iter_record_batches, list_shards
from viscon_dagster.demo.sample_corpus import BAD_ROW_KINDS


@pytest.fixture(scope="module")
def count_tokens(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return lambda texts: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


@pytest.fixture(scope="module")
def shard_table(sample_dir):
    return pq.read_table(list_shards(str(sample_dir / "shards"))[0].url.removeprefix("file://"))


def run(table: pa.Table, count_tokens, batch_size=16, **settings):
    rejects = []
    kept, stats = filter_shard(table.to_batches(max_chunksize=batch_size), "s0",
                               FilterSettings(**settings), count_tokens, rejects.extend)
    return kept, stats, rejects


def test_every_bad_row_kind_of_the_sample_is_rejected_with_its_reason(shard_table, count_tokens):
    kept, stats, rejects = run(shard_table, count_tokens)
    reasons = Counter(r["reject_reason"] for r in rejects)
    assert reasons == Counter(BAD_ROW_KINDS.values())
    assert stats.rows_in == shard_table.num_rows == kept.num_rows + len(rejects)  # no row lost
    assert all(r["reject_detail"] for r in rejects)
    too_long = next(r for r in rejects if r["reject_reason"] == "too_many_tokens")
    assert too_long["text_tokens"] > 2000 and too_long["texts"]  # the source row is kept
    assert max(kept.column("text_tokens").to_pylist()) <= 2000
    assert min(kept.column("n_images").to_pylist()) >= 1
    assert not any("END_OF_DOCUMENT" in (t or "") for texts in kept.column("texts").to_pylist() for t in texts)


def test_sampling_is_seeded_and_independent_of_row_order_and_batching(shard_table, count_tokens):
    kept, stats, _ = run(shard_table, count_tokens, docs_per_shard=10, seed=3)
    assert kept.num_rows == 10 and stats.not_sampled == stats.eligible - 10
    order = list(range(shard_table.num_rows))
    random.Random(1).shuffle(order)
    shuffled, _, _ = run(shard_table.take(order), count_tokens, batch_size=5, docs_per_shard=10, seed=3)
    assert shuffled.column("doc_id").to_pylist() == kept.column("doc_id").to_pylist()
    other_seed, _, _ = run(shard_table, count_tokens, docs_per_shard=10, seed=4)
    assert set(other_seed.column("doc_id").to_pylist()) != set(kept.column("doc_id").to_pylist())


def test_duplicate_url_keeps_the_same_copy_in_either_order(shard_table, count_tokens):
    forward, _, rej_f = run(shard_table, count_tokens)
    backward, _, rej_b = run(shard_table.take(list(range(shard_table.num_rows))[::-1]), count_tokens)
    assert sorted(forward.column("doc_id").to_pylist()) == sorted(backward.column("doc_id").to_pylist())
    texts = [t.sort_by("doc_id").column("texts").to_pylist() for t in (forward, backward)]
    assert texts[0] == texts[1]
    dup_f = [r["row_index"] for r in rej_f if r["reject_reason"] == "duplicate_url"]
    dup_b = [shard_table.num_rows - 1 - r["row_index"] for r in rej_b if r["reject_reason"] == "duplicate_url"]
    assert dup_f == dup_b  # the same source row is the duplicate whichever comes first


def test_min_images_setting(shard_table, count_tokens):
    kept, stats, rejects = run(shard_table, count_tokens, min_images=3)
    assert min(kept.column("n_images").to_pylist()) >= 3
    assert stats.rejects["too_few_images"] > 0


def test_shard_is_tokenized_batch_by_batch(sample_dir, count_tokens):
    """Streaming: the tokenizer never sees more than one record batch of texts at a time."""
    sizes = []

    def recording_counter(texts):
        sizes.append(len(texts))
        return count_tokens(texts)

    url = list_shards(str(sample_dir / "shards"))[0].url
    filter_shard(iter_record_batches(url, batch_size=8), "s0", FilterSettings(), recording_counter, lambda r: None)
    assert len(sizes) > 3 and max(sizes) <= 8


def test_the_sample_names_its_images_relative_to_the_roots_it_is_served_from(sample_dir):
    import json

    urls = []
    for shard in sorted((sample_dir / "shards").glob("*.parquet")):
        table = pq.read_table(shard, columns=["images", "metadata"])
        urls += [u for row in table.column("images").to_pylist() for u in row or [] if u]
        for row in table.column("metadata").to_pylist():
            try:
                urls += [m["src"] for m in json.loads(row) if m and m.get("src")]
            except (TypeError, ValueError):  # the sample's deliberately invalid metadata row
                pass
    assert urls
    assert all(u.startswith("file:") and not u.startswith("file:/") for u in urls), urls[:3]
    assert not [u for u in urls if str(sample_dir) in u]

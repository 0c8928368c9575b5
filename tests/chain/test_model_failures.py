"""Systemic model failures fail the partition through Dagster (so a backfill relaunch retries it); a
rerun then pays only for what the journal lacks. The models are the scripted OpenAI-protocol server on
loopback, killed, restarted, refusing a key or a model name as a real one does, or rejecting requests as
invalid (400): one rejection is a row, the same rejection of the first requests fails the partition."""

import re

import dagster as dg
import pyarrow.parquet as pq
import pytest

from tests.chain.scripted_openai import ScriptedOpenAI
from tests.conftest import free_port, materialize_partition
from viscon_dagster.core.models.journal import Journal
from viscon_dagster.definitions import build_definitions
from viscon_dagster.environment import image_fetcher
from viscon_dagster.resources.models import OpenAIHTTPBackend
from viscon_dagster.resources.shard_source import record_shards

FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_concurrency": 4}
WRONG_KEY = "sk-wrong-0123456789abcdef"


def teacher(base_url, **kw):
    return OpenAIHTTPBackend(**{"model": "scripted-vlm", "base_url": base_url, "api_key": "test-key", **FAST, **kw})


def chain(tmp_path, sample_dir, tokenizer_dir, caption_model, qa_model=None):
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir),
                             fetcher=image_fetcher(allowed_file_roots=[str(sample_dir / "images")]),
                             caption_model=caption_model, qa_model=qa_model or caption_model)
    return defs, record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]


def images_ok(defs, key, instance, store) -> int:
    assert materialize_partition(defs, ["filtered_docs", "images"], key, instance).success
    return pq.read_table(store / "images" / f"{key}.parquet").column("status").to_pylist().count("ok")


def failure_text(result, node: str) -> str:
    error, parts = result.failure_data_for_node(node).error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def run_log(instance, result) -> str:
    return "\n".join(str(e) for e in instance.all_logs(result.run_id))


@pytest.mark.slow
def test_a_server_killed_mid_captions_fails_the_run_and_the_rerun_pays_only_for_the_rest(
        tmp_path, sample_dir, tokenizer_dir):
    server = ScriptedOpenAI()
    defs, key = chain(tmp_path, sample_dir, tokenizer_dir, teacher(server.start()))
    store = tmp_path / "store"
    revived = ScriptedOpenAI()
    try:
        with dg.instance_for_test() as instance:
            total = images_ok(defs, key, instance, store)
            server.die_after = answered = total // 2
            failed = materialize_partition(defs, ["captions"], key, instance, raise_on_error=False)
            assert not failed.success
            text = failure_text(failed, "captions")
            assert f"{total - answered} of {total} requests got no answer" in text and "connection refused" in text
            assert f"{answered} of {total} answers are journaled" in text
            assert not (store / "captions" / f"{key}.parquet").exists()  # no table of error rows
            assert len(Journal(store / "captions" / "_journal" / key).load()) == answered

            revived.start(port=server.port)  # the server is back
            rerun = materialize_partition(defs, ["captions"], key, instance)
            assert rerun.success
            assert revived.requests == total - answered  # nothing answered before the kill is asked again
        captions = pq.read_table(store / "captions" / f"{key}.parquet")
        assert captions.num_rows == total and sum(captions.column("from_journal").to_pylist()) == answered
        assert "error" not in captions.column("status").to_pylist()
    finally:
        server.stop()
        revived.stop()


@pytest.mark.parametrize("refusal, expected", [
    (dict(api_key="the-right-key"), "authentication failed"),
    (dict(models={"scripted-vlm"}), "model not found"),
])
@pytest.mark.slow
def test_a_wrong_key_or_model_fails_the_run_at_the_first_request(tmp_path, sample_dir, tokenizer_dir, refusal,
                                                                 expected):
    server = ScriptedOpenAI(**refusal)
    model = teacher(server.start(), api_key=WRONG_KEY, model="scripted-vlm" if "api_key" in refusal else "scripted-vl")
    defs, key = chain(tmp_path, sample_dir, tokenizer_dir, model)
    try:
        with dg.instance_for_test() as instance:
            total = images_ok(defs, key, instance, tmp_path / "store")
            failed = materialize_partition(defs, ["captions"], key, instance, raise_on_error=False)
            assert not failed.success
            text = failure_text(failed, "captions")
            assert expected in text and "nothing more was asked" in text
            assert server.requests <= FAST["max_concurrency"] < total  # not every request, none retried
            assert WRONG_KEY not in run_log(instance, failed)
    finally:
        server.stop()


@pytest.mark.slow
def test_tolerated_failures_pass_as_recorded_error_rows(tmp_path, sample_dir, tokenizer_dir, monkeypatch):
    server = ScriptedOpenAI()
    base_url = server.start()
    options = '{"max_failure_fraction": 0.5, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, "max_concurrency": 4}'
    for k, v in {"VISCON_STORAGE_ROOT": (tmp_path / "store").as_uri(), "VISCON_TOKENIZER": str(tokenizer_dir),
                 "VISCON_IMAGE_FILE_ROOTS": str(sample_dir / "images"), "VISCON_CAPTION_BACKEND": "openai",
                 "VISCON_CAPTION_MODEL": "scripted-vlm", "VISCON_CAPTION_BASE_URL": base_url,
                 "VISCON_CAPTION_OPTIONS": options, "OPENAI_API_KEY": "test-key"}.items():
        monkeypatch.setenv(k, v)
    defs = build_definitions()
    key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
    store = tmp_path / "store"
    try:
        with dg.instance_for_test() as instance:
            total = images_ok(defs, key, instance, store)
            lost = total // 4
            server.die_after = total - lost
            result = materialize_partition(defs, ["captions"], key, instance)
            assert result.success
            md = {k: v.value for k, v in result.asset_materializations_for_node("captions")[0].metadata.items()}
    finally:
        server.stop()
    assert md["model_errors_systemic"] == lost and md["model_errors_connection_refused"] == lost
    rows = pq.read_table(store / "captions" / f"{key}.parquet").to_pylist()
    errors = [r for r in rows if r["status"] == "error"]
    assert len(rows) == total and len(errors) == lost
    assert all("ConnectionRefusedError" in r["error"] for r in errors)


NOT_MULTIMODAL = "scripted-vlm is not a multimodal model: this endpoint takes no image input."
TOO_LONG = ("This model's maximum context length is 2048 tokens. However, you requested 2417 tokens (2161 in the "
            "messages, 256 in the completion). Please reduce the length of the messages or completion.")


def test_a_server_that_rejects_every_request_fails_the_run_naming_its_message(tmp_path, sample_dir, tokenizer_dir):
    server = ScriptedOpenAI(reject=NOT_MULTIMODAL)
    defs, key = chain(tmp_path, sample_dir, tokenizer_dir, teacher(server.start()))
    store = tmp_path / "store"
    try:
        with dg.instance_for_test() as instance:
            total = images_ok(defs, key, instance, store)
            failed = materialize_partition(defs, ["captions"], key, instance, raise_on_error=False)
            assert not failed.success
            text = failure_text(failed, "captions")
            log = run_log(instance, failed)
    finally:
        server.stop()
    limit = OpenAIHTTPBackend.model_fields["systemic_after_n_bad_requests"].default
    # stopped after the first `limit` rejections (plus what was in flight then), not after every request
    assert limit <= server.requests < limit + FAST["max_concurrency"] < total
    first = re.search(r"the first (\d+) requests asked were rejected \(bad_request\) with the same message", text)
    assert first and limit <= int(first.group(1)) <= server.requests, text
    assert NOT_MULTIMODAL.rstrip(".") in text and "raise systemic_after_n_bad_requests" in text
    assert f"not_asked ×{total - server.requests}" in text
    assert "RUN_FAILURE" in log or "STEP_FAILURE" in log
    assert not (store / "captions" / f"{key}.parquet").exists()  # no partition of error rows
    assert Journal(store / "captions" / "_journal" / key).load() == {}  # nothing to reuse: a rerun asks again


@pytest.mark.slow
def test_one_rejected_request_among_answers_is_a_row_and_the_run_passes(tmp_path, sample_dir, tokenizer_dir):
    server = ScriptedOpenAI(reject=TOO_LONG, rejects=1)  # the first request asked is too long, no other
    defs, key = chain(tmp_path, sample_dir, tokenizer_dir, teacher(server.start()))
    store = tmp_path / "store"
    try:
        with dg.instance_for_test() as instance:
            total = images_ok(defs, key, instance, store)
            result = materialize_partition(defs, ["captions"], key, instance)
            assert result.success
            md = {k: v.value for k, v in result.asset_materializations_for_node("captions")[0].metadata.items()}
    finally:
        server.stop()
    assert server.requests == total and server.rejected == 1
    assert md["model_errors_context_too_long"] == 1 and md["model_errors_systemic"] == 0
    rows = pq.read_table(store / "captions" / f"{key}.parquet").to_pylist()
    errors = [r for r in rows if r["status"] == "error"]
    assert len(rows) == total and len(errors) == 1
    assert "maximum context length is 2048 tokens" in errors[0]["error"]


@pytest.mark.slow
def test_qa_pairs_on_a_dead_server_fail_instead_of_writing_no_rows(tmp_path, sample_dir, tokenizer_dir):
    server = ScriptedOpenAI()
    dead = OpenAIHTTPBackend(model="scripted-llm", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", **FAST)
    defs, key = chain(tmp_path, sample_dir, tokenizer_dir, teacher(server.start()), qa_model=dead)
    store = tmp_path / "store"
    try:
        with dg.instance_for_test() as instance:
            images_ok(defs, key, instance, store)
            result = materialize_partition(defs, ["captions", "qa_pairs"], key, instance, raise_on_error=False)
            assert not result.success
            assert [e.asset_key.path[-1] for e in result.get_asset_materialization_events()] == ["captions"]
            text = failure_text(result, "qa_pairs")
            assert "connection refused" in text and "requests got no answer" in text
    finally:
        server.stop()
    assert not (store / "qa_pairs" / f"{key}.parquet").exists()

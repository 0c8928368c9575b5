"""The Batch API backend against the loopback double's fake files/batches endpoints (a fault-injection
double: it fails or expires items on demand), through the real `openai` client."""

import json
import time

import pytest

from tests.conftest import free_port
from viscon_dagster.core.models.failures import ModelServiceError
from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import Request
from viscon_dagster.resources.models import OpenAIBatchBackend

SCHEMA = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"],
          "additionalProperties": False}


def backend(double, **kw):
    return OpenAIBatchBackend(**{"model": "gpt-4o", "base_url": double.base_url, "api_key": "sk-test",
                                 "poll_interval_s": 0.02, **kw})


def input_lines(double):
    return [json.loads(line) for f in double.files.values() if f["purpose"] == "batch"
            for line in f["_data"].decode().splitlines()]


def test_batches_split_by_count_and_collect(double, storage_root, image_ref):
    b = backend(double, max_requests_per_batch=4)
    reqs = [Request.user(f"caption {i}", [image_ref], json_schema=SCHEMA) for i in range(10)]
    out = b.generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok"] * 10 and all(r.batch for r in out)
    assert out[0].parsed == {"caption": "ok "}
    assert double.batch_creates == 3 and double.calls == 0  # 4 + 4 + 2, nothing through the chat endpoint
    lines = input_lines(double)
    assert lines[0]["body"]["response_format"]["json_schema"]["schema"] == SCHEMA
    assert lines[0]["body"]["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert Journal(storage_root / "j").states("batch-") == {}  # collected: nothing left to resume
    md = b.metadata(out)
    assert md["model_usd_partition"] > 0 and md["model_ok"] == 10


def test_byte_limit_splits_files(double):
    b = backend(double, max_batch_bytes=600)
    b.generate([Request.user(f"x{i} " + "y" * 200) for i in range(4)])
    assert double.batch_creates >= 2
    assert all(f["bytes"] <= 600 for f in double.files.values() if f["purpose"] == "batch")


def test_only_failed_or_expired_items_are_resubmitted(double, storage_root):
    b = backend(double)
    reqs = [Request.user("a"), Request.user("b [[batchfail]]"), Request.user("c [[expire]]"), Request.user("d")]
    out = b.generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok"] * 4
    assert double.batch_creates == 2
    second_round = [f for f in double.files.values() if f["purpose"] == "batch"][1]
    ids = {json.loads(line)["custom_id"] for line in second_round["_data"].decode().splitlines()}
    assert ids == {out[1].fingerprint, out[2].fingerprint}


def test_gives_up_after_max_resubmits_and_fails_keeping_the_cause(double, storage_root):
    reqs = [Request.user("z [[batchfailx5]]"), Request.user("fine")]
    with pytest.raises(ModelServiceError, match=r"server_error ×1.*HTTP 500: injected item failure \(after 1 "):
        backend(double, max_resubmits=1).generate(reqs, journal_dir=storage_root / "j")
    assert double.batch_creates == 2 and len(Journal(storage_root / "j").load()) == 1
    # tolerated, it is an error row with the item's cause
    out = backend(double, max_resubmits=1, max_failure_fraction=0.5).generate(reqs)
    assert out[0].status == "error" and out[0].error_kind == "server_error" and out[1].status == "ok"


def test_a_fatal_item_failure_is_not_resubmitted(double, storage_root):
    double.models = {"gpt-4o"}
    reqs = [Request.user(f"typo {i}") for i in range(3)]
    with pytest.raises(ModelServiceError, match="model not found") as failed:
        backend(double, model="gpt-4o-typo").generate(reqs, journal_dir=storage_root / "j")
    assert double.batch_creates == 1  # no resubmission rounds for what cannot succeed
    assert "The model `gpt-4o-typo` does not exist" in str(failed.value)


@pytest.mark.parametrize("down", ["wrong key", "closed port"])
def test_a_batch_api_that_refuses_or_is_down_fails_the_call(double, down):
    if down == "wrong key":
        double.api_key = "sk-right"
        b, expected = backend(double, api_key="sk-test-wrong-key-123"), "authentication failed"
    else:
        b, expected = backend(double, base_url=f"http://127.0.0.1:{free_port()}/v1", max_attempts=1), \
            "connection refused"
    with pytest.raises(ModelServiceError, match=expected) as failed:
        b.generate([Request.user("a"), Request.user("b")])
    assert "sk-test-wrong-key-123" not in str(failed.value) and double.batch_creates == 0


def test_a_later_run_collects_the_journaled_batch_instead_of_resubmitting(double, storage_root):
    double.batch_polls_to_complete = 10**9  # never finishes during the first run
    reqs = [Request.user(f"slow {i}") for i in range(3)]
    with pytest.raises(ModelServiceError, match=r"batch_pending ×3: the batch is still running \(a rerun collects"):
        backend(double, max_wait_s=0.1).generate(reqs, journal_dir=storage_root / "j")
    assert len(Journal(storage_root / "j").states("batch-")) == 1
    double.batch_polls_to_complete = 0
    second = backend(double).generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in second] == ["ok"] * 3
    assert double.batch_creates == 1  # collected, not resubmitted
    third = backend(double).generate(reqs, journal_dir=storage_root / "j")
    assert all(r.cached for r in third) and double.batch_creates == 1


class Killed(BaseException):
    """Stands in for the process dying (a SIGKILL cannot be aimed at the microseconds between the API
    call and the journal write); BaseException, so nothing in the backend catches it."""


def test_a_batch_created_but_not_journaled_is_found_and_collected(double, storage_root, monkeypatch):
    reqs = [Request.user(f"kill window {i}") for i in range(5)]
    real_put_state = Journal.put_state

    def die_before_the_batch_id_is_written(self, name, value):
        if name.startswith("batch-"):
            raise Killed()
        return real_put_state(self, name, value)

    # the batch exists on the server when the process dies; its id never reached the journal
    monkeypatch.setattr(Journal, "put_state", die_before_the_batch_id_is_written)
    with pytest.raises(Killed):
        backend(double, max_requests_per_batch=5).generate(reqs, journal_dir=storage_root / "j")
    monkeypatch.setattr(Journal, "put_state", real_put_state)
    assert double.batch_creates == 1 and len(Journal(storage_root / "j").states("submitting-")) == 1
    # another batch created since must not confuse the search
    backend(double).generate([Request.user("unrelated")])
    assert double.batch_creates == 2

    out = backend(double).generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok"] * 5 and out[2].text == "echo: kill window 2"
    assert double.batch_creates == 2  # found by its input file and collected: not paid twice
    j = Journal(storage_root / "j")
    assert j.states("submitting-") == {} and j.states("batch-") == {}


def test_an_intent_without_a_batch_is_submitted_again(double, storage_root):
    reqs = [Request.user(f"never created {i}") for i in range(2)]
    b = backend(double)
    fps = [r.fingerprint(b.model_id) for r in reqs]
    # the process died after journaling its intent, before `batches.create` reached the server
    Journal(storage_root / "j").put_state("submitting-file-gone", {
        "input_file_id": "file-gone", "fingerprints": fps, "round": 0, "model": "gpt-4o",
        "submitted_at": time.time()})
    out = b.generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok", "ok"] and double.batch_creates == 1
    assert Journal(storage_root / "j").states("submitting-") == {}


def test_refusals_and_unparsable_in_batches(double):
    out = backend(double).generate([Request.user("r [[refuse]]", json_schema=SCHEMA),
                                    Request.user("u [[badjson]]", json_schema=SCHEMA)])
    assert [r.status for r in out] == ["refused", "unparsable"]


def test_unparsable_batch_answers_get_one_repair_round(double, storage_root):
    reqs = [Request.user("fixable [[badjsonx1]]", json_schema=SCHEMA), Request.user("fine", json_schema=SCHEMA),
            Request.user("hopeless [[badjson]]", json_schema=SCHEMA)]
    out = backend(double).generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok", "ok", "unparsable"]
    assert out[0].parsed == {"caption": "ok "} and double.batch_creates == 2  # the repair went in a second batch
    assert out[0].usage.completion_tokens > out[1].usage.completion_tokens  # both answers were paid for
    repair = [line for line in input_lines(double) if len(line["body"]["messages"]) == 3]
    assert len(repair) == 2 and repair[0]["body"]["messages"][1]["role"] == "assistant"
    assert "That answer is not valid" in repair[0]["body"]["messages"][2]["content"]


def test_without_rounds_left_the_first_unparsable_answer_is_kept(double):
    out = backend(double, max_resubmits=0).generate([Request.user("x [[badjsonx1]]", json_schema=SCHEMA)])
    assert out[0].status == "unparsable" and out[0].text is not None
    assert "no round left for its repair" in out[0].error and double.batch_creates == 1


def test_repair_retry_off_means_one_batch(double):
    out = backend(double, repair_retry=False).generate([Request.user("y [[badjsonx1]]", json_schema=SCHEMA)])
    assert out[0].status == "unparsable" and double.batch_creates == 1

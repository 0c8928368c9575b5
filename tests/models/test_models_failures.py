"""Systemic model failures fail the call (and so the partition) once every answer is journaled; fatal ones
stop it at the first occurrence. Driven through the real `openai` client against the loopback double and
closed loopback ports."""

import json

import pytest

from tests.conftest import free_port
from viscon_dagster.core.models.failures import ModelServiceError
from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import Request
from viscon_dagster.resources.models import OpenAIHTTPBackend

KEY = "sk-proj-wrong-0123456789abcdef"


def backend(base_url, **kw):
    return OpenAIHTTPBackend(**{"model": "gpt-4o-mini", "base_url": base_url, "api_key": KEY,
                                "backoff_initial_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 2.0, **kw})


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_a_closed_port_is_connection_refused_not_a_timeout(transport):
    b = backend(f"http://127.0.0.1:{free_port()}/v1", http_transport=transport, max_attempts=2,
                max_failure_fraction=1.0)
    out = b.generate([Request.user("anyone there?")])
    assert out[0].status == "error" and out[0].error_kind == "connection_refused" and out[0].attempts == 2
    assert "ConnectionRefusedError" in out[0].error


def test_a_hung_server_is_a_timeout_and_a_dropped_connection_is_a_connection_error(double):
    double.hang_s = 2.0
    b = backend(double.base_url, timeout_s=0.3, max_attempts=1, max_failure_fraction=1.0)
    out = b.generate([Request.user("slow [[timeout]]"), Request.user("cut [[drop]]")])
    assert [r.error_kind for r in out] == ["timeout", "connection"]


def test_a_dead_server_fails_the_call_naming_the_cause_and_the_count(storage_root):
    b = backend(f"http://127.0.0.1:{free_port()}/v1", max_attempts=2, max_concurrency=2)
    with pytest.raises(ModelServiceError) as failed:
        b.generate([Request.user(f"q{i}") for i in range(10)], journal_dir=storage_root / "j")
    message = str(failed.value)
    assert "10 of 10 requests got no answer" in message and "connection refused" in message
    # the first failure made success impossible: the workers stopped pulling, the rest were never asked
    assert failed.value.kinds == {"connection_refused": 2, "not_asked": 8}
    assert "0 of 10 answers are journaled; a rerun pays only for the 10 without one" in message


def test_server_errors_after_retries_fail_the_call_after_journaling_the_answers(double, storage_root):
    b = backend(double.base_url, max_attempts=2, max_concurrency=1)
    reqs = [Request.user("fine"), Request.user("x [[500x2]]")]  # fails both attempts of the first run
    with pytest.raises(ModelServiceError, match=r"server_error ×1: the server answered 5xx") as failed:
        b.generate(reqs, journal_dir=storage_root / "j")
    assert "1 of 2 answers are journaled" in str(failed.value) and failed.value.journaled == 1
    assert len(Journal(storage_root / "j").load()) == 1
    asked = double.calls
    again = b.generate(reqs, journal_dir=storage_root / "j")  # the server recovered: the rerun asks only the rest
    assert [r.status for r in again] == ["ok", "ok"] and again[0].cached and not again[1].cached
    assert double.calls == asked + 1


def test_failing_is_certain_after_the_first_failure_so_no_more_is_asked(double):
    b = backend(double.base_url, max_attempts=3, max_concurrency=2)
    with pytest.raises(ModelServiceError, match="not_asked"):
        b.generate([Request.user(f"down {i} [[500]]") for i in range(20)])
    assert double.calls <= 2 * 3  # what was in flight, with its retries; not 20 × 3


@pytest.mark.parametrize("setup, expected", [
    (dict(api_key="sk-the-right-one"), "authentication failed"),
    (dict(models={"gpt-4o"}), "model not found"),
    (dict(quota_exhausted=True), "quota is exhausted"),
])
def test_fatal_failures_stop_at_the_first_occurrence_whatever_the_tolerance(double, storage_root, setup,
                                                                            expected):
    for name, value in setup.items():
        setattr(double, name, value)
    seen = []
    b = backend(double.base_url, max_concurrency=4, max_failure_fraction=0.9)
    with pytest.raises(ModelServiceError, match=expected) as failed:
        b.generate([Request.user(f"q{i}") for i in range(40)], journal_dir=storage_root / "j", on_response=seen.append)
    assert double.calls <= 4  # what was in flight when the first came back; nothing retried
    assert "Fatal: every other request would fail the same way" in str(failed.value) and failed.value.journaled == 0
    assert KEY not in str(failed.value) and all(KEY not in r.error for r in seen)  # the server echoed it


def test_a_tolerated_share_of_failures_passes_as_error_rows(double):
    reqs = [Request.user("bad [[500]]"), *(Request.user(f"good {i}") for i in range(3))]
    b = backend(double.base_url, max_attempts=1, max_failure_fraction=0.25)
    out = b.generate(reqs)
    assert [r.status for r in out] == ["error", "ok", "ok", "ok"] and out[0].error_kind == "server_error"
    md = b.metadata(out)
    assert md["model_errors_systemic"] == 1 and md["model_errors_server_error"] == 1
    with pytest.raises(ModelServiceError, match="max_failure_fraction tolerates 0"):
        backend(double.base_url, max_attempts=1, max_failure_fraction=0.2).generate(reqs)


def test_content_failures_are_rows_not_failures(double, storage_root, image_ref):
    from viscon_dagster.core.models.request import ImageRef

    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    gone = ImageRef(url=str(storage_root / "images" / "gone.png"), sha256="00" * 32)
    out = backend(double.base_url).generate([
        Request.user("no [[refuse]]"), Request.user("u [[badjson]]", json_schema=schema), Request.user("g", [gone]),
        Request.user("fine", [image_ref])])
    assert [r.status for r in out] == ["refused", "unparsable", "error", "ok"]
    assert out[2].error_kind == "image_unreadable"


def test_vllm_offline_without_vllm_fails_the_call_saying_how_to_install_it():
    import importlib.util

    from viscon_dagster.resources.models import VLLMOfflineBackend

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed in this environment: test_models_vllm.py runs it")
    with pytest.raises(ModelServiceError, match=r"VLLMOfflineBackend \(model tiny\) failed: RuntimeError: vLLM is not"):
        VLLMOfflineBackend(model="tiny").generate([Request.user("hi")])


def test_keys_never_reach_a_message_masked_or_not():
    from viscon_dagster.core.models.failures import redact

    assert redact("Incorrect API key provided: sk-proj-ab12****wxyz.") == "Incorrect API key provided: sk-***."
    assert redact("sent key my-own-secret-value to the proxy", ["my-own-secret-value"]) == "sent key *** to the proxy"


def test_vllm_offline_without_vllm_says_how_to_install_it():
    import importlib.util

    from viscon_dagster.resources.models.vllm_offline import import_vllm

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(RuntimeError, match=r"-c constraints-gpu\.txt.*scripts/setup_vllm_cpu\.sh"):
        import_vllm()


# -- rejections (400): a row each, unless the first requests all get the same one ----------------------

NO_SCHEMA = "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model (req {n})."


def test_the_same_rejection_of_the_first_n_requests_fails_the_call_naming_the_message(double, storage_root):
    double.reject = NO_SCHEMA  # `{n}` differs per request: the same message up to its numbers
    b = backend(double.base_url, max_concurrency=4, systemic_after_n_bad_requests=10)
    with pytest.raises(ModelServiceError) as failed:
        b.generate([Request.user(f"q{i}") for i in range(60)], journal_dir=storage_root / "j")
    message = str(failed.value)
    assert 10 <= double.calls <= 10 + 3  # the limit, plus what was in flight when it was reached
    assert f"the first {double.calls} requests asked were rejected (bad_request) with the same message" in message
    assert "is not supported with this model" in message and "systemic_after_n_bad_requests (now 10)" in message
    assert failed.value.kinds == {"bad_request": double.calls, "not_asked": 60 - double.calls}
    assert failed.value.journaled == 0 and Journal(storage_root / "j").load() == {}


def test_rejections_are_rows_when_an_answer_came_first_or_the_rule_is_off(double):
    b = backend(double.base_url, max_concurrency=1)
    reqs = [Request.user("fine"), *(Request.user(f"page {i} [[toolong]]") for i in range(15))]
    out = b.generate(reqs)  # one answer first: the configuration works, each rejection is about its page
    assert out[0].ok and {r.error_kind for r in out[1:]} == {"context_too_long"}
    assert "maximum context length" in out[1].error and b.metadata(out)["model_errors_context_too_long"] == 15
    double.reject = NO_SCHEMA
    off = backend(double.base_url, max_concurrency=1, systemic_after_n_bad_requests=0)
    assert [r.error_kind for r in off.generate([Request.user(f"x{i}") for i in range(15)])] == ["bad_request"] * 15


def test_fewer_rejections_than_the_limit_are_rows(double):
    reqs = [Request.user(f"page {i} [[toolong]]") for i in range(3)] + [Request.user(f"ok {i}") for i in range(9)]
    out = backend(double.base_url, max_concurrency=1, systemic_after_n_bad_requests=4).generate(reqs)
    assert [r.status for r in out] == ["error"] * 3 + ["ok"] * 9


def test_a_small_partition_fails_when_every_request_is_rejected_alike_unless_the_journal_answered(double,
                                                                                                   storage_root):
    b = backend(double.base_url, max_concurrency=2)  # the default limit, 10, is more than these partitions
    assert b.generate([Request.user("alone [[toolong]]")])[0].error_kind == "context_too_long"  # one is a row
    double.reject = NO_SCHEMA
    with pytest.raises(ModelServiceError, match=r"all 3 requests asked were rejected \(bad_request\)"):
        b.generate([Request.user(f"s{i}") for i in range(3)])
    double.reject = None
    reqs = [Request.user(f"j{i}") for i in range(5)]
    b.generate(reqs, journal_dir=storage_root / "j")  # answered and journaled
    double.reject = NO_SCHEMA
    out = b.generate([*reqs, Request.user("new 1"), Request.user("new 2")], journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok"] * 5 + ["error"] * 2  # the partition worked: its last two are rows


def test_the_batch_api_rejecting_every_item_fails_the_call_without_resubmitting(double, storage_root):
    from viscon_dagster.resources.models import OpenAIBatchBackend

    double.reject = NO_SCHEMA
    b = OpenAIBatchBackend(model="gpt-4o", base_url=double.base_url, api_key="sk-test", poll_interval_s=0.02)
    with pytest.raises(ModelServiceError) as failed:
        b.generate([Request.user(f"b{i}") for i in range(12)], journal_dir=storage_root / "j")
    assert "the first 12 requests asked were rejected (bad_request)" in str(failed.value)
    assert "HTTP 400: Invalid parameter: 'response_format'" in str(failed.value)
    assert double.batch_creates == 1 and failed.value.kinds == {"bad_request": 12}  # a 400 is not asked again
    assert Journal(storage_root / "j").states("batch-") == {}


def test_a_rejected_batch_item_is_a_row_and_not_resubmitted(double, storage_root):
    from viscon_dagster.resources.models import OpenAIBatchBackend

    b = OpenAIBatchBackend(model="gpt-4o", base_url=double.base_url, api_key="sk-test", poll_interval_s=0.02)
    out = b.generate([Request.user("a"), Request.user("b [[toolong]]"), Request.user("c [[batchfail]]")],
                     journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok", "error", "ok"] and out[1].error_kind == "context_too_long"
    assert out[1].batch and "HTTP 400: This model's maximum context length" in out[1].error
    resubmitted = [json.loads(line)["custom_id"] for f in list(double.files.values())
                   if f["purpose"] == "batch" for line in f["_data"].decode().splitlines()][3:]
    assert resubmitted == [out[2].fingerprint]  # the 500 went back, the 400 did not


def test_the_rejection_rule():
    from viscon_dagster.core.models.failures import FailureTally, normalised_message, rejection_limit, status_kind
    from viscon_dagster.core.models.request import Response

    def resp(status="error", kind="bad_request", error="Invalid image in message 3 (request req_8f2a91c0)."):
        return Response(fingerprint="f", model="m", backend="b", status=status, error_kind=kind, error=error)

    assert normalised_message("Invalid image in message 3 (request req_8f2a91c0).") == \
        normalised_message("invalid image in message 12  (request req_77be0d13).") == \
        "invalid image in message # (request #)."
    assert normalised_message("image too large") != normalised_message("unsupported image type")
    assert [rejection_limit(10, asked, 0) for asked in (0, 1, 2, 9, 10, 500)] == [0, 0, 2, 9, 10, 10]
    assert rejection_limit(10, 3, from_journal=1) == 0 and rejection_limit(0, 500, 0) == 0
    assert status_kind(400, "context_length_exceeded") == status_kind(400, None, "Error code: 400 - The decoder prompt "
                                                                      "(length 9000) is longer than the maximum model "
                                                                      "length of 8192.") == "context_too_long"
    assert status_kind(400, None, "Invalid image") == "bad_request"
    assert status_kind(400, 400, "This model's maximum context length is 2048 tokens.") == "context_too_long"  # vLLM
    assert status_kind(400, 400, "Invalid image") == "bad_request"

    tally = FailureTally(100, systemic_after_n_bad_requests=3)
    for r in (resp(), resp(error="image too large"), resp(), resp()):  # another message starts a new run
        tally.add(r)
    assert not tally.stop and tally.run_length == 2
    tally.add(resp(status="error", kind="timeout", error="slow"))  # other failures neither count nor break it
    tally.add(resp(kind="image_unreadable", error="gone"))
    tally.add(resp(error="Invalid image in message 40 (request req_00000001)."))
    assert tally.rejected and tally.stop
    answered = FailureTally(100, systemic_after_n_bad_requests=3)
    for r in (resp(status="refused", kind="refusal"), resp(), resp(), resp(), resp()):  # a refusal is an answer
        answered.add(r)
    assert not answered.stop and answered.error("b", [None]) is None

"""The OpenAI-compatible backend, driven through the real `openai` client against the loopback double."""

import time

import pytest

from viscon_dagster.core.models.request import Request, SamplingParams
from viscon_dagster.resources.models import OpenAIHTTPBackend

SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
          "required": ["question", "answer"], "additionalProperties": False}


def backend(double, **kw):
    kw = {"model": "gpt-4o-mini", "base_url": double.base_url, "api_key": "sk-test",
          "backoff_initial_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 1.0, **kw}
    return OpenAIHTTPBackend(**kw)


def test_text_and_images_roundtrip(double, image_ref, storage_root):
    b = backend(double)
    reqs = [Request.user(f"Describe image {i}.", [image_ref]) for i in range(5)]
    out = b.generate(reqs, journal_dir=storage_root / "journal")
    assert [r.status for r in out] == ["ok"] * 5
    assert out[3].text == "echo: Describe image 3."
    assert out[0].usage.prompt_tokens > 0 and out[0].latency_s > 0
    # the image travelled as a base64 data URL of the stored bytes
    part = double.log[0]["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert double.log[0]["model"] == "gpt-4o-mini"


def test_rerun_pays_nothing(double, storage_root):
    b = backend(double)
    reqs = [Request.user(f"q{i}") for i in range(10)] + [Request.user("q0")]  # a duplicate too
    first = b.generate(reqs, journal_dir=storage_root / "j")
    assert double.calls == 10 and first[10].text == first[0].text
    again = b.generate(reqs, journal_dir=storage_root / "j")
    assert double.calls == 10
    assert all(r.cached for r in again) and [r.text for r in again] == [r.text for r in first]
    md = b.metadata(again)
    assert md["model_requests_sent"] == 0 and md["model_requests_journaled"] == 11


def test_structured_output_via_response_format(double):
    out = backend(double).generate([Request.user("Make a QA pair.", json_schema=SCHEMA, schema_name="qa")])
    assert out[0].status == "ok" and set(out[0].parsed) == {"question", "answer"}
    rf = double.log[0]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == SCHEMA and rf["json_schema"]["name"] == "qa"


def test_falls_back_to_prompt_when_response_format_is_rejected(double):
    double.supports_response_format = False
    b = backend(double)
    out = b.generate([Request.user(f"QA {i}", json_schema=SCHEMA) for i in range(3)])
    assert [r.status for r in out] == ["ok"] * 3
    assert all(set(r.parsed) == {"question", "answer"} for r in out)
    assert "```json" in out[0].text  # extracted from prose
    assert double.status_counts[400] >= 1 and double.status_counts[200] == 3
    # learned: a later call goes straight to the prompt form
    before = double.status_counts[400]
    b.generate([Request.user("QA later", json_schema=SCHEMA)])
    assert double.status_counts[400] == before


def test_repair_retry_fixes_a_malformed_answer(double):
    out = backend(double).generate([Request.user("QA [[badjsonx1]]", json_schema=SCHEMA)])
    assert out[0].status == "ok" and out[0].attempts == 2
    assert double.log[1]["messages"][-2] == {"role": "assistant", "content": '{"answer": "unterminated'}
    assert "not valid" in double.log[1]["messages"][-1]["content"]


def test_unparsable_after_repair_is_recorded_and_journaled(double, storage_root):
    b = backend(double)
    out = b.generate([Request.user("QA [[badjson]]", json_schema=SCHEMA)], journal_dir=storage_root / "j")
    assert out[0].status == "unparsable" and out[0].error_kind == "unparsable" and out[0].attempts == 2
    b.generate([Request.user("QA [[badjson]]", json_schema=SCHEMA)], journal_dir=storage_root / "j")
    assert double.calls == 2  # paid for: not asked again


@pytest.mark.parametrize("structured", [True, False])
def test_refusals_are_recorded(double, structured):
    kw = {"json_schema": SCHEMA} if structured else {}
    out = backend(double).generate([Request.user("Who is this? [[refuse]]", **kw)])
    assert out[0].status == "refused" and "sorry" in out[0].error.lower()


def test_429_honours_retry_after(double):
    double.retry_after_s = 0.6
    b = backend(double, backoff_initial_s=0.001, backoff_max_s=0.002)
    t0 = time.perf_counter()
    out = b.generate([Request.user("hello [[429x2]]")])
    elapsed = time.perf_counter() - t0
    assert out[0].status == "ok" and out[0].attempts == 3
    assert elapsed >= 1.2  # two waits of Retry-After, not the 2 ms backoff
    assert double.status_counts[429] == 2


def test_500s_timeouts_and_dropped_connections_are_retried(double):
    double.hang_s = 1.0
    b = backend(double, timeout_s=0.4)
    out = b.generate([Request.user("a [[500x2]]"), Request.user("b [[timeoutx1]]"), Request.user("c [[dropx2]]")])
    assert [r.status for r in out] == ["ok"] * 3
    assert [r.attempts for r in out] == [3, 2, 3]


def test_tolerated_exhausted_retries_become_error_rows_that_a_rerun_retries(double, storage_root):
    b = backend(double, max_attempts=2, max_failure_fraction=0.5)
    reqs = [Request.user("x [[500x3]]"), Request.user("fine")]
    out = b.generate(reqs, journal_dir=storage_root / "j")
    assert out[0].status == "error" and out[0].error_kind == "server_error" and out[1].status == "ok"
    md = b.metadata(out)
    assert md["model_errors_server_error"] == 1 and md["model_ok"] == 1
    again = b.generate(reqs, journal_dir=storage_root / "j")
    assert again[0].status == "ok" and not again[0].cached and again[1].cached


def test_bounded_concurrency(double):
    double.latency_s = 0.2
    in_flight = {"now": 0, "max": 0}
    orig = double._chat

    async def counting(request):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            return await orig(request)
        finally:
            in_flight["now"] -= 1

    double._chat = counting
    double.stop()
    double.start()
    out = backend(double, max_concurrency=4).generate([Request.user(f"c{i}") for i in range(12)])
    assert all(r.ok for r in out) and in_flight["max"] == 4


def test_requests_per_minute_limit(double):
    # a leaky bucket (aiolimiter): a burst of up to the per-minute rate, then one every 60/rate s
    b = backend(double, requests_per_minute=60)
    t0 = time.perf_counter()
    b.generate([Request.user(f"r{i}") for i in range(62)])
    assert 1.8 <= time.perf_counter() - t0 < 6


def test_tokens_per_minute_limit(double):
    # each request is estimated at prompt chars/4 + max_tokens = 99; 6000 TPM lets 60 through at once,
    # then ~1 per second
    b = backend(double, tokens_per_minute=6000)
    t0 = time.perf_counter()
    b.generate([Request.user(f"t{i}", params=SamplingParams(max_tokens=99)) for i in range(62)])
    assert 1.0 <= time.perf_counter() - t0 < 6


def test_sampling_params_are_sent(double):
    backend(double).generate([Request.user("p", params=SamplingParams(max_tokens=33, temperature=0.5, seed=7,
                                                                      stop=["\n"]))])
    body = double.log[0]
    assert (body["max_tokens"], body["temperature"], body["seed"], body["stop"]) == (33, 0.5, 7, ["\n"])


def test_missing_image_is_a_row_not_a_crash(double, storage_root):
    from viscon_dagster.core.models.request import ImageRef

    gone = ImageRef(url=str(storage_root / "images" / "gone.png"), sha256="00" * 32)
    out = backend(double).generate([Request.user("a", [gone]), Request.user("b")])
    assert out[0].status == "error" and out[0].error_kind == "image_unreadable" and out[1].ok
    assert "FileNotFoundError" in out[0].error and "0000000000" in out[0].error  # the image by its sha256,
    assert str(storage_root) not in out[0].error  # never by a path of this machine
    assert double.calls == 1


def test_a_400_for_another_reason_does_not_switch_to_prompt_mode(double):
    orig = double.answer

    def always_400(body):
        return 400, {}, {"error": {"message": "image too large", "type": "invalid_request_error"}}

    double.answer = always_400
    b = backend(double)
    out = b.generate([Request.user("y", json_schema=SCHEMA)])
    assert out[0].status == "error" and out[0].error_kind == "bad_request" and not b._prompt_mode_learned
    double.answer = orig
    b.generate([Request.user("y2", json_schema=SCHEMA)])
    assert "response_format" in double.log[-1]  # still asks the server to enforce the schema


def test_failed_repair_call_keeps_the_paid_answer(double, storage_root):
    b = backend(double, max_attempts=1)
    orig = double.answer
    seen = []

    def first_bad_then_500(body):
        seen.append(body)
        if len(seen) == 1:
            return 200, {}, {"choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": "not json"}}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
        return 500, {}, {"error": {"message": "down"}}

    double.answer = first_bad_then_500
    out = b.generate([Request.user("z", json_schema=SCHEMA)], journal_dir=storage_root / "j")
    double.answer = orig
    assert out[0].status == "unparsable" and out[0].text == "not json" and "repair call failed" in out[0].error
    assert out[0].usage.prompt_tokens == 5
    again = b.generate([Request.user("z", json_schema=SCHEMA)], journal_dir=storage_root / "j")
    assert again[0].cached and len(seen) == 2


def test_model_label_keys_the_journal(double, storage_root):
    a = backend(double, model="/old/path/captioner", model_label="captioner-v1")
    b = backend(double, model="/new/path/captioner", model_label="captioner-v1")
    a.generate([Request.user("same")], journal_dir=storage_root / "j")
    out = b.generate([Request.user("same")], journal_dir=storage_root / "j")
    assert out[0].cached and out[0].model == "captioner-v1" and double.calls == 1

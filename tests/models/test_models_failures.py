"""Systemic model failures fail the call (and so the partition) once every answer is journaled; fatal ones
stop it at the first occurrence. Driven through the real `openai` client against the loopback double and
closed loopback ports."""

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

"""Backends as Dagster resources: configured by the environment, the key from an EnvVar, metadata out."""

import dagster as dg
import pytest

from viscon_dagster.core.models.request import Request
from viscon_dagster.environment import model_backend
from viscon_dagster.resources.models import ModelBackend, OpenAIHTTPBackend, TransformersLocalBackend


def test_asset_uses_a_configured_backend_and_reports_metadata(double, storage_root, monkeypatch):
    monkeypatch.setenv("VISCON_TEST_OPENAI_KEY", "sk-secret-value")
    seen = {}

    @dg.asset
    def captions(llm: ModelBackend) -> dg.MaterializeResult:
        out = llm.generate([Request.user(f"c{i}") for i in range(3)], journal_dir=storage_root / "j")
        return dg.MaterializeResult(metadata=llm.metadata(out, remaining_partitions=44))

    orig = double._chat

    async def spy(request):
        seen["auth"] = request.headers.get("Authorization")
        return await orig(request)

    double._chat = spy
    double.stop()
    double.start()
    llm = OpenAIHTTPBackend(model="gpt-4o-mini", base_url=double.base_url,
                            api_key=dg.EnvVar("VISCON_TEST_OPENAI_KEY"))
    result = dg.materialize([captions], resources={"llm": llm})
    assert result.success
    md = result.asset_materializations_for_node("captions")[0].metadata
    assert md["model_requests"].value == 3 and md["model_ok"].value == 3
    assert md["model_usd_projected_remaining"].value > 0
    assert seen["auth"] == "Bearer sk-secret-value"
    assert all("sk-secret" not in str(v.value) for v in md.values())


def test_backend_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("VISCON_QA_BACKEND", "openai")
    monkeypatch.setenv("VISCON_QA_BASE_URL", "http://127.0.0.1:8000/v1")
    monkeypatch.setenv("VISCON_QA_MODEL", "openchat/openchat-3.5-0106")
    monkeypatch.setenv("VISCON_QA_OPTIONS", '{"max_concurrency": 256, "requests_per_minute": 5000, '
                                            '"price_per_mtok": {"openchat/openchat-3.5-0106": [0.1, 0.2]}}')
    b = model_backend("qa")
    assert isinstance(b, OpenAIHTTPBackend)
    assert (b.model, b.base_url, b.max_concurrency, b.requests_per_minute) == (
        "openchat/openchat-3.5-0106", "http://127.0.0.1:8000/v1", 256, 5000)
    assert b.price_table().prices["openchat/openchat-3.5-0106"] == (0.1, 0.2)


def test_the_failure_tolerance_is_a_backend_option(monkeypatch):
    monkeypatch.setenv("VISCON_QA_BACKEND", "openai")
    monkeypatch.setenv("VISCON_QA_OPTIONS", '{"max_failure_fraction": 0.05}')
    assert model_backend("qa").max_failure_fraction == 0.05
    monkeypatch.setenv("VISCON_QA_OPTIONS", '{"max_failure_fraction": 5}')
    with pytest.raises(ValueError, match="max_failure_fraction"):
        model_backend("qa")


def test_tiny_default_keeps_its_settings_unless_options_override(monkeypatch):
    monkeypatch.delenv("VISCON_CAPTION_BACKEND", raising=False)
    monkeypatch.delenv("VISCON_CAPTION_MODEL", raising=False)
    monkeypatch.setenv("VISCON_CAPTION_OPTIONS", '{"batch_size": 4}')
    b = model_backend("caption")
    assert isinstance(b, TransformersLocalBackend) and b.batch_size == 4 and b.json_max_string_length == 32


@pytest.mark.parametrize("options, message", [
    ('{"max_concurency": 8}', "has no setting max_concurency"),
    ("max_concurrency=8", "is not JSON"),
    ("[8]", "must be a JSON object"),
    ('{"api_key": "sk-oops"}', "keys never go in options"),
    ('{"model": "other"}', "VISCON_QA_MODEL"),
])
def test_bad_backend_options_are_refused_with_the_reason(monkeypatch, options, message):
    monkeypatch.setenv("VISCON_QA_BACKEND", "openai")
    monkeypatch.setenv("VISCON_QA_OPTIONS", options)
    with pytest.raises(ValueError, match=message):
        model_backend("qa")


def test_unknown_backend_kind_is_refused(monkeypatch):
    monkeypatch.setenv("VISCON_QA_BACKEND", "ollama")
    with pytest.raises(ValueError, match="use one of transformers, openai"):
        model_backend("qa")

"""Backends as Dagster resources: configured by the environment, the key from an EnvVar, metadata out."""

import dagster as dg

from viscon_dagster.core.models.request import Request
from viscon_dagster.resources.models import ModelBackend, OpenAIHTTPBackend


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

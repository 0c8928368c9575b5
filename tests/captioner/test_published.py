"""The published-captioner and gate records: round trip on a local root and on S3, None when absent."""

from __future__ import annotations

import pytest
from upath import UPath

from viscon_dagster.core.captioner.published import (
    GateResult,
    PublishedCaptioner,
    read_current,
    read_gate,
    write_current,
    write_gate,
)

SHA = "ab" * 32


def test_round_trip_local(tmp_path):
    store = UPath(tmp_path)
    assert read_current(store, "tiny-demo") is None
    assert read_gate(store, "tiny-demo") is None
    c = PublishedCaptioner.create("tiny-demo", SHA, base_model="tiny-student@1234", teacher="tiny-vlm@5678")
    assert c.label == "contextual-captioner/tiny-demo@abababababab"
    assert c.path == "contextual_captioner/tiny-demo/abababababab"
    write_current(store, c)
    assert (tmp_path / "contextual_captioner" / "tiny-demo" / "current.json").is_file()
    assert read_current(store, "tiny-demo") == c
    assert read_current(store, "other") is None
    g = GateResult("tiny-demo", SHA, True, {"bleu": {"base": 1.0, "tuned": 9.0}})
    write_gate(store, g)
    assert (tmp_path / "captioner_evaluation" / "tiny-demo" / "gate.json").is_file()
    assert read_gate(store, "tiny-demo") == g


def test_malformed_record_is_a_clear_error(tmp_path):
    store = UPath(tmp_path)
    p = tmp_path / "contextual_captioner" / "tiny-demo"
    p.mkdir(parents=True)
    (p / "current.json").write_text('{"recipe": "tiny-demo"}')
    with pytest.raises(ValueError, match="PublishedCaptioner"):
        read_current(store, "tiny-demo")


def test_round_trip_s3(s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="k",
                 aws_secret_access_key="s").create_bucket(Bucket="models")
    store = UPath("s3://models/root", client_kwargs={"endpoint_url": s3_server, "region_name": "us-east-1"},
                  key="k", secret="s")
    c = PublishedCaptioner.create("smolvlm-256m", SHA, base_model="HuggingFaceTB/SmolVLM-256M-Instruct",
                                  teacher="gpt-4o")
    write_current(store, c)
    write_gate(store, GateResult("smolvlm-256m", SHA, False, {}))
    assert read_current(store, "smolvlm-256m") == c
    assert read_gate(store, "smolvlm-256m").passed is False

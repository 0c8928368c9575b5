"""Tiny offline models and the transformers backend: schema-valid JSON even from random weights."""

import hashlib

import pytest

from viscon_dagster.core.models.failures import ModelServiceError
from viscon_dagster.core.models.parsing import validate
from viscon_dagster.core.models.request import Request, SamplingParams
from viscon_dagster.demo.tiny_models import build_tiny_models
from viscon_dagster.resources.models import TransformersLocalBackend

QA = {"type": "object",
      "properties": {"question": {"type": "string"}, "answer": {"type": "string"},
                     "options": {"type": "array", "items": {"type": "string"}, "minItems": 4, "maxItems": 4},
                     "letter": {"enum": ["A", "B", "C", "D"]}},
      "required": ["question", "answer", "options", "letter"], "additionalProperties": False}


def test_tiny_models_are_deterministic_hf_checkpoints(tiny_models, tmp_path):
    again = build_tiny_models(tmp_path)
    for kind in ("vlm", "lm"):
        files = sorted(p.name for p in tiny_models[kind].iterdir())
        assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(files)
        assert files == sorted(p.name for p in again[kind].iterdir())
        for name in files:
            a, b = (d / name for d in (tiny_models[kind], again[kind]))
            assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest(), name
    from transformers import AutoConfig, AutoProcessor

    assert AutoConfig.from_pretrained(tiny_models["vlm"]).model_type == "idefics3"
    assert AutoConfig.from_pretrained(tiny_models["lm"]).model_type == "llama"
    proc = AutoProcessor.from_pretrained(tiny_models["vlm"])
    message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}
    prompt = proc.apply_chat_template([message], add_generation_prompt=True)
    assert prompt == "<|im_start|>user\n<image>hi<|im_end|>\n<|im_start|>assistant\n"


def test_vlm_answers_schema_valid_json_with_images(tiny_models, image_ref, storage_root):
    b = TransformersLocalBackend(model=str(tiny_models["vlm"]), json_max_string_length=24, batch_size=3)
    reqs = [Request.user(f"Write a question about the image ({i}).", [image_ref], json_schema=QA,
                         params=SamplingParams(max_tokens=256)) for i in range(4)]
    reqs.append(Request.user("Describe the image.", [image_ref], params=SamplingParams(max_tokens=8)))
    out = b.generate(reqs, journal_dir=storage_root / "j")
    for r in out[:4]:
        assert r.status == "ok", r.text
        assert validate(r.parsed, QA) is None and r.finish_reason == "stop"
        assert r.usage.prompt_tokens > 4  # the image expands to IMAGE_SEQ_LEN tokens
    assert out[4].status == "ok" and out[4].parsed is None and out[4].usage.completion_tokens <= 8
    again = b.generate(reqs, journal_dir=storage_root / "j")
    assert all(r.cached for r in again) and [r.text for r in again] == [r.text for r in out]


def test_text_lm_json_and_image_rejection(tiny_models, image_ref):
    b = TransformersLocalBackend(model=str(tiny_models["lm"]), json_max_string_length=24, device="cpu")
    out = b.generate([Request.user(f"QA {i}", json_schema=QA, params=SamplingParams(max_tokens=256))
                      for i in range(3)] + [Request.user("no images here", [image_ref])])
    assert [r.status for r in out[:3]] == ["ok"] * 3
    assert all(validate(r.parsed, QA) is None for r in out[:3])
    assert out[3].status == "error" and out[3].error_kind == "bad_request"
    md = b.metadata(out)
    assert md["model_ok"] == 3 and md["model_errors_bad_request"] == 1 and md["model_tokens_out"] > 0


def test_a_missing_or_broken_checkpoint_fails_the_call_instead_of_writing_rows(tmp_path, storage_root):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # transformers: ValueError, no model type
    for path in (tmp_path / "missing", broken):
        with pytest.raises(ModelServiceError, match=r"TransformersLocalBackend \(model .*\) failed: ") as failed:
            TransformersLocalBackend(model=str(path)).generate([Request.user("hi")], journal_dir=storage_root / "j")
        assert "0 of 1 answers are journaled" in str(failed.value)
        if path.name == "missing":  # says what is missing and the command that makes it
            assert "does not exist" in str(failed.value) and "`viscon models tiny`" in str(failed.value)

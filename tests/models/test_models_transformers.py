"""Tiny offline models and the transformers backend: schema-valid JSON even from random weights."""

import hashlib
import re

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


# -- requests the model cannot take are rows: over-long prompts, unreadable images ---------------------

LONG = "The harbour of Lisbon at dawn. " * 700  # about 7000 tokens of the tiny tokenizer


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_models, tmp_path_factory):
    """A random 1-layer GPT-2 with 64 learned positions and the tiny tokenizer: past its positions it does not
    degrade, it raises IndexError (which failed the whole call before prompts were checked)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("tiny-gpt2")
    tok = AutoTokenizer.from_pretrained(tiny_models["lm"])
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("model, long_prompt, context", [("lm", LONG, 4096), ("gpt2", "word " * 100, 64)])
def test_a_prompt_over_the_context_length_is_a_row_and_its_batch_is_answered(tiny_models, tiny_gpt2, storage_root,
                                                                            model, long_prompt, context):
    b = TransformersLocalBackend(model=str(tiny_gpt2 if model == "gpt2" else tiny_models[model]), device="cpu",
                                 batch_size=4)
    reqs = [Request.user(f"Say something ({i}).", params=SamplingParams(max_tokens=8)) for i in range(3)]
    reqs.insert(1, Request.user(long_prompt, params=SamplingParams(max_tokens=8)))
    out = b.generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok", "error", "ok", "ok"]
    assert out[1].error_kind == "context_too_long", out[1].error
    assert re.fullmatch(rf"the prompt is \d+ tokens and the model's context length is {context}: no room for an "
                        r"answer \(max_model_len or the model's max_position_embeddings\)", out[1].error)
    assert all(0 < r.usage.completion_tokens <= 8 for r in out if r.ok)
    assert b.metadata(out)["model_errors_context_too_long"] == 1
    again = b.generate(reqs, journal_dir=storage_root / "j")  # the answers are journaled, the row is not
    assert [r.cached for r in again] == [True, False, True, True] and again[1].error_kind == "context_too_long"


def test_an_answer_that_would_run_past_max_model_len_stops_there(tiny_models):
    b = TransformersLocalBackend(model=str(tiny_models["lm"]), device="cpu", max_model_len=48, batch_size=4)
    params = SamplingParams(max_tokens=16)
    # 15, 38 and 194 prompt tokens: 16 answer tokens fit after the first, 10 after the second, none after the third
    short, tight, over = (Request.user(t, params=params) for t in ("hi", "word " * 8, "word " * 60))
    out = b.generate([short, tight, over])
    assert out[0].ok and out[0].usage.prompt_tokens + 16 <= 48 and out[0].usage.completion_tokens == 16
    assert out[1].ok and out[1].usage.prompt_tokens + 16 > 48  # generated alone, up to the context's end
    assert out[1].usage.prompt_tokens + out[1].usage.completion_tokens == 48 and out[1].finish_reason == "length"
    assert out[2].error_kind == "context_too_long" and "the prompt is 194 tokens" in out[2].error


def test_vlm_rows_for_an_unreadable_image_and_a_prompt_past_max_model_len(tiny_models, image_ref, storage_root):
    from viscon_dagster.core.models.request import ImageRef

    garbage = storage_root / "images" / "not-an-image.png"
    garbage.write_bytes(b"<html>404</html>")
    gone, broken = (ImageRef(url=str(p), sha256=c * 64)  # distinct hashes: distinct requests
                    for p, c in ((storage_root / "images" / "gone.png", "0"), (garbage, "1")))
    b = TransformersLocalBackend(model=str(tiny_models["vlm"]), max_model_len=64, batch_size=8)
    params = SamplingParams(max_tokens=8)
    out = b.generate([Request.user("Describe.", [image_ref], params=params),
                      Request.user("Describe.", [gone], params=params),
                      Request.user("Describe " * 80, [image_ref], params=params),  # the image's tokens count too
                      Request.user("Describe.", [broken], params=params),
                      Request.user("Caption.", [image_ref], params=params)])
    assert [r.status for r in out] == ["ok", "error", "error", "error", "ok"]
    assert [r.error_kind for r in out[1:4]] == ["image_unreadable", "context_too_long", "image_unreadable"]
    assert "FileNotFoundError" in out[1].error and "UnidentifiedImageError" in out[3].error
    assert not [r.error for r in out if r.error and str(storage_root) in r.error]  # images by sha256, not path


def test_a_text_only_model_asked_for_captions_fails_the_call_naming_why(tiny_models, image_ref):
    b = TransformersLocalBackend(model=str(tiny_models["lm"]), device="cpu")
    with pytest.raises(ModelServiceError, match=r"the first 10 requests asked were rejected \(bad_request\) with the "
                                                r"same message.*is a text-only model; the request has images"):
        b.generate([Request.user(f"Caption {i}.", [image_ref]) for i in range(30)])


def test_sampling_with_a_seed_gives_the_same_answers_again(tiny_models):
    from viscon_dagster.assets.chain import QAConfig, greedy_seed, sampling
    from viscon_dagster.assets.per_shard import config_defaults

    def answers(params: SamplingParams) -> list[str]:
        b = TransformersLocalBackend(model=str(tiny_models["lm"]), device="cpu")  # a new process's state
        return [r.text for r in b.generate([Request.user(f"Write a question ({i}).", params=params)
                                            for i in range(4)])]

    seeded = sampling(QAConfig(temperature=1.0, max_tokens=24))
    assert seeded.seed == 0 and sampling(QAConfig()).seed is None  # greedy requests keep their journal keys
    assert "seed" not in config_defaults(QAConfig, *greedy_seed(QAConfig))  # nor does the greedy default's version
    first = answers(seeded)
    assert answers(seeded) == first
    assert answers(seeded.model_copy(update={"seed": 1})) != first  # the seed, not greedy decoding, fixed them

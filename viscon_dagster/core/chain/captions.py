"""Stage 5: contextual captions — the requests to the teacher VLM and the rows its answers become.

One caption per kept image (`ok` in the images table). The request carries the rendered page
context (stage 4) and the image from our storage; the non-contextual control carries the image
only. Every answer becomes a row with a status: `ok`, or why there is no usable caption
(`refused`, `unparsable`, `error` from the backend; `empty`, `too_short`, `copies_alt_text` from
our judgement), with the model, prompt version and request fingerprint as lineage. The answer is cleaned
(text.py) before it is judged; `text_fix` says whether cleaning repaired it or found characters already lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from viscon_dagster.core.chain.page_context import RenderedContext, render_context
from viscon_dagster.core.chain.prompts import CAPTION, NONCONTEXTUAL, caption_prompt
from viscon_dagster.core.chain.text import clean_model_text
from viscon_dagster.core.models.request import ImageRef, Request, Response, SamplingParams

CAPTIONS_SCHEMA = pa.schema([
    ("shard", pa.string()), ("doc_id", pa.string()), ("doc_url", pa.string()), ("position", pa.int32()),
    ("image_url", pa.string()), ("image_sha256", pa.string()), ("image_path", pa.string()),
    ("alt_text", pa.string()), ("context_tokens", pa.int32()), ("context_trimmed", pa.bool_()),
    ("caption", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("caption_model", pa.string()), ("backend", pa.string()), ("prompt_version", pa.string()),
    ("fingerprint", pa.string()), ("from_journal", pa.bool_()),
    ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()), ("latency_s", pa.float32()),
    ("text_fix", pa.string()),  # null, "repaired" or "unrepairable" (core/chain/text.py)
])
CAPTION_STATUSES = ("ok", "refused", "unparsable", "error", "empty", "too_short", "too_long", "copies_alt_text")


@dataclass(frozen=True)
class CaptionSettings:
    """What shapes a caption request besides the page and the image: the context's token budget around the image,
    the longest caption, the temperature. The chain's captions and the captioner's pairs (which rebuild the
    teacher's requests, fingerprint for fingerprint) both start from these defaults."""
    context_tokens: int = 1500
    max_tokens: int = 384
    temperature: float = 0.0


TEACHER_DEFAULTS = CaptionSettings()


@dataclass(frozen=True)
class CaptionJob:
    """One kept image and the context of the page it sits in."""

    shard: str
    doc_id: str
    doc_url: str
    position: int
    image_url: str
    image_sha256: str
    image_path: str  # relative to the storage root
    alt_text: str | None
    context: RenderedContext | None  # None for the non-contextual control


def caption_jobs(docs: pa.Table, images: pa.Table, shard: str, contextual: bool = True,
                 budget: int = 1500, count: Callable[[str], int] | None = None) -> list[CaptionJob]:
    by_id = {d["doc_id"]: d for d in docs.select(["doc_id", "url", "texts", "images"]).to_pylist()}
    jobs = []
    for row in images.filter(pa.compute.equal(images["status"], "ok")).to_pylist():
        doc = by_id[row["doc_id"]]
        ctx = None
        if contextual:
            kwargs = {"count": count} if count else {}
            ctx = render_context(doc["texts"], doc["images"], row["position"], row["alt_text"], budget, **kwargs)
        jobs.append(CaptionJob(shard, row["doc_id"], doc["url"], row["position"], row["image_url"],
                               row["sha256"], row["path"], row["alt_text"], ctx))
    return jobs


def caption_request(job: CaptionJob, image: ImageRef, params: SamplingParams) -> Request:
    meta = {"doc_id": job.doc_id, "position": job.position}
    if job.context is None:
        return Request.user(NONCONTEXTUAL.template, images=[image], system=NONCONTEXTUAL.system, params=params,
                            meta=meta)
    return Request.user(caption_prompt(job.context), images=[image], system=CAPTION.system, params=params, meta=meta)


def _normalise(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


def judge_caption(response: Response, alt_text: str | None, min_chars: int, max_chars: int,
                  text: str | None = None) -> tuple[str, str | None]:
    """(status, error) of one answer (`text`: its cleaned text, default the answer's own); `ok` only for a
    caption worth building Q&A on."""
    if not response.ok:
        return response.status, response.error or response.error_kind
    text = ((response.text if text is None else text) or "").strip()
    if not text:
        return "empty", "the model returned no text"
    if len(text) < min_chars:
        return "too_short", f"{len(text)} characters < {min_chars}"
    if len(text) > max_chars:
        return "too_long", f"{len(text)} characters > {max_chars}"
    if alt_text and _normalise(text) == _normalise(alt_text):
        return "copies_alt_text", "the caption repeats the alt text"
    return "ok", None


def caption_rows(jobs: list[CaptionJob], responses: list[Response], contextual: bool,
                 min_chars: int = 20, max_chars: int = 4000) -> list[dict]:
    rows = []
    for job, r in zip(jobs, responses, strict=True):
        cleaned = clean_model_text(r.text) if r.ok and r.text else None
        status, error = judge_caption(r, job.alt_text, min_chars, max_chars, cleaned.text if cleaned else None)
        rows.append({
            "shard": job.shard, "doc_id": job.doc_id, "doc_url": job.doc_url, "position": job.position,
            "image_url": job.image_url, "image_sha256": job.image_sha256, "image_path": job.image_path,
            "alt_text": job.alt_text,
            "context_tokens": job.context.tokens if job.context else None,
            "context_trimmed": job.context.trimmed if job.context else None,
            "caption": cleaned.text.strip() if status == "ok" else None,
            "status": status, "error": error, "caption_model": r.model, "backend": r.backend,
            "prompt_version": (CAPTION if contextual else NONCONTEXTUAL).version,
            "fingerprint": r.fingerprint, "from_journal": r.cached,
            "prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens,
            "latency_s": r.latency_s, "text_fix": cleaned.fix if cleaned else None,
        })
    return rows

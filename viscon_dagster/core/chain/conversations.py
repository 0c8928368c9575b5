"""Stage 8: image samples (caption + Q&A) → LLaVA/ShareGPT4V conversation records, one set per mix.

A record is `{"id", "image", "conversations": [{"from": "human"|"gpt", "value"}, ...]}` plus the
lineage columns. Rules every record obeys (and `checks/conversation_checks.py` verifies):
* `<image>` appears exactly once, at the start of the first human turn (`"<image>\\n" + instruction`);
  a literal `<image>` inside model-written text is neutralised so it cannot add a second one;
* turns alternate human/gpt, starting with human and ending with gpt;
* ids are unique and stable: `{image_sha256[:16]}-{doc_id[:8]}-{mix}-{n}` (n counts the records of
  one sample in one mix: 0, or 0/1 for `separate`; a sample repeated in the input gets the next n).

Mixes (stage 8 of the pipeline; the paper's comparison):
  leaky          caption turn, then all of the image's Q&A, in ONE conversation (default)
  captions       caption turn only
  free_form      free-form Q&A only
  mcq            multiple-choice Q&A only
  qa             free-form + multiple-choice Q&A
  separate       the caption conversation and the Q&A conversation as two records (non-leaky)
  noncontextual  caption turn with the control caption written without page context (only where it exists)

MCQ answers are the option letter alone by default, matching the LLaVA instruction "Answer with the
option's letter from the given choices directly."; `mcq_answer="letter_text"` gives "B. option".
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from viscon_dagster.core.chain.qa import MCQ_LETTERS

MIXES = ("leaky", "captions", "free_form", "mcq", "qa", "separate", "noncontextual")
DEFAULT_MIXES = ("leaky",)
IMAGE_TOKEN = "<image>"
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."
MCQ_ANSWER_STYLES = ("letter", "letter_text")

# The training conversation shows the image only, never the page, so no phrasing claims the model
# is given page text; they ask for the specifics (names, places, events) the contextual captions carry.
CAPTION_INSTRUCTIONS = (
    "Describe this image in detail.",
    "Give a detailed description of this image, including who or what it shows and where, if known.",
    "What is shown in this image? Describe it thoroughly.",
    "Write a detailed caption for this image.",
    "Explain what this picture depicts, with as much specific context as you can.",
    "Describe the scene in this image, naming the people, places, products or events it shows.",
    "Provide an informative description of this image.",
    "Tell me about this image in detail.",
    "Describe this photo and the context it was likely taken in.",
    "Write a thorough, specific description of what this image shows.",
    "What does this image show, and what is it about?",
    "Summarize the content of this image in a detailed paragraph.",
)

LINEAGE_COLUMNS = ("shard", "doc_id", "doc_url", "image_url", "image_sha256", "caption_model", "qa_model",
                   "caption_prompt_version", "qa_prompt_version")

TURN_TYPE = pa.struct([("from", pa.string()), ("value", pa.string())])
CONVERSATIONS_SCHEMA = pa.schema(
    [("id", pa.string()), ("mix", pa.string()),
     # what the turns hold: caption | noncontextual_caption | free_form | mcq | qa | caption+qa ...
     ("content", pa.string()),
     ("image", pa.string()), ("conversations", pa.list_(TURN_TYPE))]
    + [(name, pa.string()) for name in LINEAGE_COLUMNS])


@dataclass
class ConversationResult:
    records: list[dict[str, Any]]
    records_per_mix: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # "<mix>:<reason>" → samples
    dropped_items: Counter = field(default_factory=Counter)  # invalid Q&A items / cleaned text, by kind

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.records, schema=CONVERSATIONS_SCHEMA)

    def metadata(self) -> dict[str, Any]:
        return {"records": len(self.records), "records_per_mix": dict(self.records_per_mix),
                "skipped": dict(self.skipped), "dropped_items": dict(self.dropped_items)}


def caption_instruction(sample_key: str, seed: int, pool: tuple[str, ...] = CAPTION_INSTRUCTIONS) -> str:
    """A phrasing from the pool, fixed by (sample, seed): reruns and row order do not change it."""
    h = hashlib.sha256(f"{seed}:{sample_key}".encode()).digest()
    return pool[int.from_bytes(h[:8], "big") % len(pool)]


def without_image_token(text: Any, dropped: Counter | None = None) -> str:
    """Stripped text; a stray `<image>` written by a model becomes plain 'image' (counted in `dropped`)."""
    if not isinstance(text, str):
        return ""
    if IMAGE_TOKEN in text:
        if dropped is not None:
            dropped["image_token_in_text"] += 1
        text = text.replace(IMAGE_TOKEN, "image")
    return text.strip()


def _strip_letter(option: str, letter: str) -> str:
    """`A. Paris` / `A) Paris` → `Paris`, so options are not lettered twice."""
    for sep in (". ", ") ", ": "):
        if option.startswith(letter + sep):
            return option[len(letter) + len(sep):].strip()
    return option


def free_form_turns(items: Iterable[dict] | None, dropped: Counter) -> list[tuple[str, str]]:
    turns = []
    for item in items or []:
        q, a = without_image_token(item.get("question"), dropped), without_image_token(item.get("answer"), dropped)
        if q and a:
            turns.append((q, a))
        else:
            dropped["invalid_free_form"] += 1
    return turns


def mcq_turns(items: Iterable[dict] | None, dropped: Counter, answer_style: str = "letter") -> list[tuple[str, str]]:
    turns = []
    for item in items or []:
        q = without_image_token(item.get("question"), dropped)
        options = [_strip_letter(without_image_token(o, dropped), letter)
                   for letter, o in zip(MCQ_LETTERS, item.get("options") or [])]
        answer = (item.get("answer") or "").strip().upper()[:1]
        if (not q or len(item.get("options") or []) != len(MCQ_LETTERS) or not all(options)
                or len(set(options)) != len(options) or answer not in MCQ_LETTERS or not answer):
            dropped["invalid_mcq"] += 1
            continue
        lines = [q] + [f"{letter}. {o}" for letter, o in zip(MCQ_LETTERS, options)] + [MCQ_INSTRUCTION]
        reply = answer if answer_style == "letter" else f"{answer}. {options[MCQ_LETTERS.index(answer)]}"
        turns.append(("\n".join(lines), reply))
    return turns


def to_conversation(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    """(human, gpt) pairs → alternating turns with `<image>` leading the first human turn."""
    out = []
    for i, (human, gpt) in enumerate(turns):
        out.append({"from": "human", "value": f"{IMAGE_TOKEN}\n{human}" if i == 0 else human})
        out.append({"from": "gpt", "value": gpt})
    return out


def _mix_parts(mix: str, caption: list, noncontextual: list, free: list, mcq: list) -> list[tuple[str, list]]:
    """The (content label, turns) records one sample yields for a mix, before dropping empty ones."""
    qa = free + mcq
    if mix == "leaky":
        label = "+".join(name for name, t in (("caption", caption), ("qa", qa)) if t)
        return [(label, caption + qa)]
    if mix == "separate":
        return [("caption", caption), ("qa", qa)]
    return [{"captions": ("caption", caption), "free_form": ("free_form", free), "mcq": ("mcq", mcq),
             "qa": ("qa", qa), "noncontextual": ("noncontextual_caption", noncontextual)}[mix]]


_SKIP_REASON = {"captions": "no_caption", "free_form": "no_free_form", "mcq": "no_mcq", "qa": "no_qa",
                "noncontextual": "no_noncontextual_caption", "leaky": "no_caption_or_qa",
                "separate": "no_caption_or_qa"}


def build_conversations(samples: pa.Table | Iterable[dict[str, Any]], mixes: Iterable[str] = DEFAULT_MIXES,
                        seed: int = 0, mcq_answer: str = "letter") -> ConversationResult:
    """Conversation records for every requested mix (see the module doc for the rules).

    Samples are the stage-7 rows (caption, noncontextual_caption, free_form, mcq, lineage), as dicts
    or a pyarrow table. A sample
    with no usable turns for a mix is skipped and counted under `skipped["<mix>:<reason>"]`; a
    `separate` sample missing one half still yields the other half.
    """
    mixes = list(dict.fromkeys(mixes))
    unknown = [m for m in mixes if m not in MIXES]
    if unknown or mcq_answer not in MCQ_ANSWER_STYLES:
        raise ValueError(f"unknown mix {unknown} (known: {MIXES}) or mcq_answer {mcq_answer!r}")
    if isinstance(samples, pa.Table):
        samples = samples.to_pylist()
    result = ConversationResult(records=[])
    seen: Counter = Counter()  # id prefix → records issued, keeps ids unique for repeated samples
    for s in samples:
        dropped = result.dropped_items
        key = f"{s['image_sha256']}:{s['doc_id']}"
        instruction = caption_instruction(key, seed)
        caption_text = without_image_token(s.get("caption"), dropped)
        nc_text = without_image_token(s.get("noncontextual_caption"), dropped)
        caption = [(instruction, caption_text)] if caption_text else []
        noncontextual = [(instruction, nc_text)] if nc_text else []
        free = free_form_turns(s.get("free_form"), dropped)
        mcq = mcq_turns(s.get("mcq"), dropped, mcq_answer)
        lineage = {c: s.get(c) for c in LINEAGE_COLUMNS}
        for mix in mixes:
            parts = [(label, turns) for label, turns in _mix_parts(mix, caption, noncontextual, free, mcq) if turns]
            if not parts:
                result.skipped[f"{mix}:{_SKIP_REASON[mix]}"] += 1
                continue
            prefix = f"{s['image_sha256'][:16]}-{s['doc_id'][:8]}-{mix}"
            for label, turns in parts:
                n = seen[prefix]
                seen[prefix] += 1
                record = {"id": f"{prefix}-{n}", "mix": mix, "content": label, "image": s["image_path"],
                          "conversations": to_conversation(turns), **lineage}
                if mix == "noncontextual":  # lineage of the control caption, not the contextual one
                    record["caption_model"] = s.get("noncontextual_caption_model")
                    record["caption_prompt_version"] = s.get("noncontextual_caption_prompt_version",
                                                             s.get("caption_prompt_version"))
                result.records.append(record)
                result.records_per_mix[mix] += 1
    return result

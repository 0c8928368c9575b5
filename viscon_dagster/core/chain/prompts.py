"""Prompt templates (the paper's exact prompts are not public; these follow its description).

Every caption and Q&A row records the `prompt_version` that made it, and the prompt text enters the request
fingerprint, so changing a template re-asks only what it affects. A version is the prompt's readable name and
a digest of its texts (`Prompt.version`): an edit to the wording is a new version, with nothing to bump by hand.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from viscon_dagster.core.chain.page_context import RenderedContext


@dataclass
class Prompt:
    name: str
    system: str
    template: str

    @property
    def version(self) -> str:
        """`<name>-<digest of the system prompt and the template>`, e.g. `contextual-caption-3f2a9c1e`."""
        text = f"{self.system}\0{self.template}".encode()
        return f"{self.name}-{hashlib.sha256(text).hexdigest()[:8]}"


CAPTION_SYSTEM = (
    "You write image captions for a vision-language dataset. A caption joins what is visible in the "
    "image with what the surrounding web page says about it: names of people, places, events, "
    "products, dates. Never invent facts that are neither visible nor stated on the page."
)

CAPTION_TEMPLATE = """The attached image appears on a web page. Below is the page's text in reading order; \
images are shown as <image_k> placeholders and the attached image is {target}.
{alt_line}
--- page ---
{page}
--- end of page ---

Write one detailed paragraph describing the attached image ({target}). Describe what is visible, \
and use the page text to identify and explain it (who, what, where, when, why it matters). \
Write the caption directly, without mentioning "the page", "the text" or the placeholder."""

NONCONTEXTUAL_TEMPLATE = """Write one detailed paragraph describing the attached image: the objects, \
people, setting, colours, text and actions that are visible. Write the caption directly."""

QA_SYSTEM = "You turn image captions into question-answer pairs for training a vision-language model."

QA_TEMPLATE = """Here is a detailed caption of an image:

\"\"\"{caption}\"\"\"

Write {n_free} free-form question-answer pairs and {n_mcq} multiple-choice questions about the image \
this caption describes. Ask about what the caption states, as a person looking at the image would \
ask; each answer must follow from the caption. Questions must differ from one another. Each \
multiple-choice question has exactly 4 distinct options and one correct answer given as its letter \
(A, B, C or D).

Answer with JSON only, in this shape:
{{"free_form": [{{"question": "...", "answer": "..."}}], \
"mcq": [{{"question": "...", "options": ["...", "...", "...", "..."], "answer": "A"}}]}}"""


CAPTION = Prompt("contextual-caption", CAPTION_SYSTEM, CAPTION_TEMPLATE)
NONCONTEXTUAL = Prompt("noncontextual-caption", CAPTION_SYSTEM, NONCONTEXTUAL_TEMPLATE)
QA = Prompt("qa", QA_SYSTEM, QA_TEMPLATE)
del CAPTION_SYSTEM, CAPTION_TEMPLATE, NONCONTEXTUAL_TEMPLATE, QA_SYSTEM, QA_TEMPLATE  # one home: the Prompts


def caption_prompt(ctx: RenderedContext) -> str:
    alt = (f'The attached image\'s alt text is: "{ctx.alt_text}".' if ctx.alt_text
           else "The attached image has no alt text.")
    return CAPTION.template.format(target=ctx.target_placeholder, alt_line=alt, page=ctx.text)


def qa_prompt(caption: str, n_free: int, n_mcq: int) -> str:
    return QA.template.format(caption=caption, n_free=n_free, n_mcq=n_mcq)


def qa_json_schema(n_free: int, n_mcq: int) -> dict:
    """The structured-output schema for one caption's Q&A (exact counts, 4 options, a letter)."""
    text = {"type": "string", "minLength": 1}
    return {
        "type": "object",
        "properties": {
            "free_form": {"type": "array", "minItems": n_free, "maxItems": n_free, "items": {
                "type": "object", "properties": {"question": text, "answer": text},
                "required": ["question", "answer"], "additionalProperties": False}},
            "mcq": {"type": "array", "minItems": n_mcq, "maxItems": n_mcq, "items": {
                "type": "object", "properties": {
                    "question": text,
                    "options": {"type": "array", "items": text, "minItems": 4, "maxItems": 4},
                    "answer": {"type": "string", "enum": ["A", "B", "C", "D"]}},
                "required": ["question", "options", "answer"], "additionalProperties": False}},
        },
        "required": ["free_form", "mcq"],
        "additionalProperties": False,
    }

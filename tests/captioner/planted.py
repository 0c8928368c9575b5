"""Good captions of real sample pages, and five planted degradations of them.

The pages are the sample corpus's (demo/sample_corpus.py): each image's page context is rendered by the chain's
own code (core/chain/page_context.render_context → the caption prompt), so the names, numbers and places are
those a captioner would see. Two writers stand in for good captioners, both weight-free and deterministic:

- the *teacher* (the references): a frame naming the page's title, the alt text, and the two page sentences
  nearest the image that carry a name or a number;
- the *clean* captioner (the set under test): other words for the frame, the same page sentences, in another
  order.

The degradations change only the clean set; the metric each one is meant to show is in the test's table.
Entities are found through the sample's own vocabularies (demo/sample_prose.py), not through the metric's rule.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from viscon_dagster.core.captioner.faithfulness import context_of
from viscon_dagster.core.chain.page_context import render_context
from viscon_dagster.core.chain.prompts import caption_prompt
from viscon_dagster.demo.sample_prose import PEOPLE, PLACES, PRODUCTS

NAMES = [*PLACES, *PEOPLE, *PRODUCTS]
# wrong names a page never holds: the sample's vocabularies are closed, so these cannot be on any page
WRONG = ["Port Meridian", "Elena Vasquez", "the Zephyr Q7 blender", "Mount Kalder", "Oskar Lindqvist"]
NUMBERS = {"two": "nine", "three": "seventeen", "six": "fourteen", "eleven": "nineteen", "twenty": "eighty",
           "fifty": "ninety"}
SENTENCE = re.compile(r"(?<=[.!?])\s+")
PHRASE_REPEATS = 4


@dataclass
class Item:
    doc: str
    prompt: str
    context: str
    title: str
    alt: str
    facts: list[str]  # page sentences near the image that carry a name or a number
    teacher: str = ""
    clean_frame: str = ""
    clean: str = ""
    meta: dict = field(default_factory=dict)


def _has_fact(sentence: str) -> bool:
    return any(n in sentence for n in NAMES) or any(re.search(rf"\b{w}\b", sentence) for w in NUMBERS)


def load_items(sample_dir, budget: int = 300, limit: int = 120) -> list[Item]:
    """Every image of the sample's good pages with its rendered context and the page facts near it."""
    items: list[Item] = []
    for shard in sorted((sample_dir / "shards").glob("*.parquet")):
        for n, row in enumerate(pq.read_table(shard).to_pylist()):
            texts, images = row["texts"], row["images"]
            try:
                meta = json.loads(row["metadata"])
                url = json.loads(row["general_metadata"])["url"]
            except (TypeError, ValueError, KeyError):
                continue
            if not texts or not texts[0] or len(texts) != len(images) or "END_OF_DOCUMENT" in texts[0]:
                continue
            for pos, image in enumerate(images):
                if image is None or not isinstance(meta[pos], dict):
                    continue
                alt = meta[pos].get("alt_text") or ""
                ctx = render_context(texts, images, pos, alt, budget)
                prompt = caption_prompt(ctx)
                near = [p for p in sorted(range(len(texts)), key=lambda p: abs(p - pos)) if texts[p] and p > 0]
                facts = [s.strip() for p in near for s in SENTENCE.split(texts[p].split("\n")[0])
                         if _has_fact(s) and s.strip() in ctx.text]
                unique = list(dict.fromkeys(facts))[:2]
                if len(unique) < 2:
                    continue
                items.append(Item(f"{shard.stem}/{n}:{url}", prompt, context_of(prompt), texts[0], alt, unique))
    items = items[:limit]
    for it in items:
        # the title only where the captioner was given it (the rendered context may leave it out)
        page = f"the article \"{it.title}\"" if it.title in it.context else "a web page"
        alt = f" The picture shows {it.alt[0].lower() + it.alt[1:]}." if it.alt and it.alt != it.title else ""
        it.teacher = f"A photograph from {page}.{alt} {it.facts[0]} {it.facts[1]}"
        it.clean_frame = f"This image illustrates {page}."
        it.clean = f"{it.clean_frame} {it.facts[1]} {it.facts[0]}"
    return items


# -- the five degradations of the clean captions ------------------------------------------------------------

def shuffled(items: list[Item]) -> list[str]:
    """Each image gets the clean caption of an image on another page (half the list away)."""
    n = len(items)
    out = []
    for i in range(n):
        j = (i + n // 2) % n
        while items[j].doc == items[i].doc:
            j = (j + 1) % n
        out.append(items[j].clean)
    return out


def entities_swapped(items: list[Item]) -> list[str]:
    """The page's names and numbers in the clean caption replaced by wrong ones."""
    out = []
    for it in items:
        text = it.clean
        k = 0
        for name in sorted(NAMES, key=len, reverse=True):
            if name in text:
                text = text.replace(name, WRONG[k % len(WRONG)])
                k += 1
        for word, wrong in NUMBERS.items():
            text = re.sub(rf"\b{word}\b", wrong, text)
        out.append(text)
    return out


def context_removed(items: list[Item]) -> list[str]:
    """Only the frame is left: the sentences taken from the page are removed."""
    return [it.clean_frame for it in items]


def truncated(items: list[Item]) -> list[str]:
    """The first third of the words."""
    out = []
    for it in items:
        words = it.clean.split()
        out.append(" ".join(words[: max(1, len(words) // 3)]))
    return out


def repeated_phrase(items: list[Item]) -> list[str]:
    """The caption, then its first three words over and over."""
    out = []
    for it in items:
        phrase = " ".join(it.clean.split()[:3])
        out.append(f"{it.clean} " + " ".join([phrase] * PHRASE_REPEATS))
    return out


DEGRADATIONS = {"shuffled": shuffled, "entities_swapped": entities_swapped, "context_removed": context_removed,
                "truncated": truncated, "repeated_phrase": repeated_phrase}

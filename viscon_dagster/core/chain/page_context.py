"""Stage 4: a document rendered as the context of one of its images.

The page becomes text in reading order with `<image_k>` placeholders (k counts images from 1);
the target image is marked `<image_k: TARGET>` and its alt text is attached. When the page is
longer than the token budget, the text nearest the target is kept: paragraphs are added by
distance from the target (before it first on ties), and a paragraph that does not fit whole is
cut on its far side, so what stays is the text that borders the image. Cuts are marked `[…]`.
Deterministic for a given document, target and budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

CountTokens = Callable[[str], int]
ELLIPSIS = "[…]"


def count_words(text: str) -> int:
    """A tokenizer-free budget measure (whitespace words); pass a real tokenizer's count for precision."""
    return len(text.split())


@dataclass(frozen=True)
class RenderedContext:
    text: str                 # the page with placeholders, trimmed to the budget
    target_placeholder: str   # e.g. "<image_3: TARGET>"
    target_index: int         # k of the target image (1-based)
    alt_text: str | None
    tokens: int               # budget measure of the kept paragraphs
    trimmed: bool


def placeholder(k: int, target: bool = False) -> str:
    return f"<image_{k}: TARGET>" if target else f"<image_{k}>"


def _cut(text: str, budget: int, keep_tail: bool, count: CountTokens) -> str:
    """The longest run of whole words from one end of `text` that fits `budget`."""
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # binary search on how many words fit
        mid = (lo + hi + 1) // 2
        part = " ".join(words[-mid:] if keep_tail else words[:mid])
        if count(part) <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return ""
    return " ".join(words[-lo:] if keep_tail else words[:lo])


def render_context(texts: Sequence[str | None], images: Sequence[str | None], target_position: int,
                   alt_text: str | None = None, budget: int = 1500,
                   count: CountTokens = count_words) -> RenderedContext:
    """Render the page around the image at `target_position` (an index into `texts`/`images`)."""
    if images[target_position] is None:
        raise ValueError(f"position {target_position} holds no image")
    image_number = {pos: k for k, pos in enumerate((p for p, im in enumerate(images) if im is not None), start=1)}
    text_positions = [p for p, t in enumerate(texts) if t]
    # nearest first; before the image wins a tie (captions usually follow what introduces them)
    order = sorted(text_positions, key=lambda p: (abs(p - target_position), p > target_position))

    kept: dict[int, str] = {}
    used, trimmed = 0, False
    for p in order:
        cost = count(texts[p])
        if used + cost <= budget:
            kept[p] = texts[p]
            used += cost
            continue
        trimmed = True
        part = _cut(texts[p], budget - used, keep_tail=p < target_position, count=count)
        if part:
            kept[p] = f"{ELLIPSIS} {part}" if p < target_position else f"{part} {ELLIPSIS}"
            used += count(part)
        break  # everything further away is dropped: the kept text stays contiguous around the image
    if len(kept) < len(text_positions):
        trimmed = True

    lo = min([*kept, target_position])
    hi = max([*kept, target_position])
    lines = []
    if trimmed and lo > 0 and any(texts[p] for p in range(lo)):
        lines.append(ELLIPSIS)
    for p in range(lo, hi + 1):
        if images[p] is not None:
            lines.append(placeholder(image_number[p], target=p == target_position))
        elif p in kept:
            lines.append(kept[p])
    if trimmed and any(texts[p] for p in range(hi + 1, len(texts))):
        lines.append(ELLIPSIS)
    k = image_number[target_position]
    return RenderedContext("\n\n".join(lines), placeholder(k, True), k, alt_text or None, used, trimmed)

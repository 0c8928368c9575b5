"""Scoring a model on the benchmark: one row per item, so two mixes can be compared item by item.

Each item is asked as the mixes' MCQ turns ask (core/chain/conversations.py): the image, the question, the
options as `A. …` lines, then "Answer with the option's letter from the given choices directly.", rendered by the
model's own chat template with the generation prompt.

Methods:
* `letter_logprob` (default): one forward pass; the prediction is the letter, of A–D, whose token the model gives
  the highest log-probability as the first token of its answer. Every item gets a valid answer, so a model that has
  not (yet) learnt the answer format — the tiny demo model, an early checkpoint, a base model that rambles — is
  still measured on what it prefers rather than scored wrong for formatting; it is deterministic, and the
  cheapest (SEED-Bench's own evaluation likewise ranks the options by likelihood instead of parsing text).
* `greedy`: greedy decoding of a few tokens; the first standalone letter A–D of the answer is the prediction (no
  letter: wrong, recorded as `no_letter`). What a user of the model would see; stricter.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from viscon_dagster.core.ablation.benchmark import LETTERS
from viscon_dagster.core.chain.conversations import MCQ_INSTRUCTION

METHODS = ("letter_logprob", "greedy")
_LETTER = re.compile(r"\b([ABCD])\b")


def mcq_text(question: str, options: Sequence[str]) -> str:
    return "\n".join([question, *(f"{letter}. {o}" for letter, o in zip(LETTERS, options)), MCQ_INSTRUCTION])


def mcq_messages(question: str, options: Sequence[str]) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": mcq_text(question, options)}]}]


def parse_letter(text: str) -> str | None:
    m = _LETTER.search(text or "")
    return m.group(1) if m else None


def letter_token_ids(processor) -> list[int]:
    """The first token of an assistant answer "A" … "D" as the chat template renders it after the generation
    prompt. A tokenizer that merges the letter into the same first token for two letters is refused."""
    tok = processor.tokenizer
    user = [{"role": "user", "content": [{"type": "text", "text": "?"}]}]
    prompt = processor.apply_chat_template(user, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = []
    for letter in LETTERS:
        full = processor.apply_chat_template(user + [{"role": "assistant",
                                                      "content": [{"type": "text", "text": letter}]}])
        full_ids = tok(full, add_special_tokens=False)["input_ids"]
        if full_ids[:len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
            raise ValueError("the chat template's answer does not extend its generation prompt token by token: "
                             "score with method='greedy'")
        ids.append(full_ids[len(prompt_ids)])
    if len(set(ids)) != len(LETTERS):
        raise ValueError(f"the answer letters share a first token ({ids}): score with method='greedy'")
    return ids


class Scorer:
    """A checkpoint loaded once (transformers), scoring items in batches."""

    def __init__(self, model_dir: str, *, device: str = "auto", bf16: bool = False,
                 do_image_splitting: bool | None = None, longest_edge: int | None = None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.processor = AutoProcessor.from_pretrained(model_dir)
        image_processor = self.processor.image_processor  # the recipe's image settings, as in training
        if do_image_splitting is not None:
            image_processor.do_image_splitting = do_image_splitting
        if longest_edge:
            image_processor.size = {"longest_edge": longest_edge}
            image_processor.max_image_size = {"longest_edge": longest_edge}
        dtype = torch.bfloat16 if bf16 and self.device != "cpu" else torch.float32
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self._letters: list[int] | None = None

    def _inputs(self, items: Sequence[dict], images: Sequence[bytes]):
        from PIL import Image

        prompts = [self.processor.apply_chat_template(mcq_messages(i["question"], i["options"]),
                                                      add_generation_prompt=True) for i in items]
        pil = [[Image.open(io.BytesIO(b)).convert("RGB")] for b in images]
        inputs = self.processor(text=prompts, images=pil, return_tensors="pt", padding=True, padding_side="left")
        return inputs.to(self.device)

    def score(self, items: Sequence[dict], images: Sequence[bytes], method: str = "letter_logprob",
              batch_size: int = 8) -> list[dict[str, Any]]:
        """One row per item: `item_id`, `answer`, `predicted` (None: no letter), `correct`, `letter_logprobs`
        (A–D; letter_logprob only), `response` (greedy only)."""
        if method not in METHODS:
            raise ValueError(f"unknown scoring method {method!r} (known: {METHODS})")
        rows: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):
            batch, data = items[start:start + batch_size], images[start:start + batch_size]
            with self.torch.inference_mode():
                inputs = self._inputs(batch, data)
                if method == "letter_logprob":
                    rows += self._by_logprob(batch, inputs)
                else:
                    rows += self._by_greedy(batch, inputs)
        return rows

    def _by_logprob(self, batch: Sequence[dict], inputs) -> list[dict[str, Any]]:
        if self._letters is None:
            self._letters = letter_token_ids(self.processor)
        logits = self.model(**inputs).logits[:, -1, :].float()  # left padding: the last position is the prompt's
        logprobs = self.torch.log_softmax(logits, dim=-1)[:, self._letters].cpu().tolist()
        out = []
        for item, lp in zip(batch, logprobs):
            predicted = LETTERS[max(range(len(LETTERS)), key=lambda k: lp[k])]
            out.append({"item_id": item["item_id"], "answer": item["answer"], "predicted": predicted,
                        "correct": predicted == item["answer"], "letter_logprobs": [round(v, 5) for v in lp],
                        "response": None})
        return out

    def _by_greedy(self, batch: Sequence[dict], inputs) -> list[dict[str, Any]]:
        prompt_len = inputs["input_ids"].shape[1]
        generated = self.model.generate(**inputs, max_new_tokens=8, do_sample=False)
        texts = self.processor.tokenizer.batch_decode(generated[:, prompt_len:], skip_special_tokens=True)
        out = []
        for item, text in zip(batch, texts):
            predicted = parse_letter(text)
            out.append({"item_id": item["item_id"], "answer": item["answer"], "predicted": predicted,
                        "correct": predicted == item["answer"], "letter_logprobs": None, "response": text.strip()})
        return out

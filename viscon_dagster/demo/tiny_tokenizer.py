"""A byte-level BPE tokenizer trained offline on the sample prose, saved in Hugging Face format.

Real runs load a published tokenizer by id or path (e.g. the QA model's); this one exists so that
tests and the demo exercise the same loading code with nothing fetched from a hub.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from viscon_dagster.demo.sample_prose import corpus

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<unk>"]

# ChatML, the template SmolVLM-family models use; a plain-text LM chat template for the tiny LM.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(vocab_size: int = 2048, extra_special_tokens: list[str] | None = None,
                    n_paragraphs: int = 3000, seed: int = 0) -> Tokenizer:
    """Train a byte-level BPE on seeded English prose (deterministic for a given seed)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = SPECIAL_TOKENS + list(extra_special_tokens or [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = corpus(n_paragraphs, seed=seed)
    # punctuation and JSON structure too, so model outputs in JSON tokenise sensibly
    texts += ['{"question": "What is shown?", "answer": "A red door.", "options": ["A", "B"]}'] * 20
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_pretrained_tokenizer(path: str | Path, vocab_size: int = 2048,
                              extra_special_tokens: list[str] | None = None):
    """Train and save as a transformers `PreTrainedTokenizerFast` with a chat template.

    Returns the loaded fast tokenizer.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(vocab_size, extra_special_tokens),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=list(extra_special_tokens or []) or None,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))
    return fast

"""Tiny random-weight models, built offline in seconds, for tests and the demo.

* a VLM of the Idefics3 (SmolVLM) family: `Idefics3ForConditionalGeneration` + `Idefics3Processor`;
* a causal text LM (Llama architecture).

Each has a locally trained byte-level BPE tokenizer with a ChatML chat template and is saved in
Hugging Face format, loadable by transformers (`AutoModelForImageTextToText`,
`AutoModelForCausalLM`) and by vLLM. Weights come from a fixed seed, so two builds are identical.
Real runs name real checkpoints in configuration; nothing here is used for them.
"""

from __future__ import annotations

import json
from pathlib import Path

from viscon_dagster.core.captioner.recipes import TINY_STUDENT, TINY_STUDENT_SEED
from viscon_dagster.demo.tiny_tokenizer import save_pretrained_tokenizer

VOCAB_SIZE = 1024
# Idefics3's processor looks these tokens up by name; the row/col tags are only used with image
# splitting (off here), but the processor resolves their ids at construction.
IMAGE_TOKENS = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
ROW_COL_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]

# ChatML with image parts rendered as `<image>`, where the processor expands them.
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' or part['type'] == 'image_url' %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

IMAGE_SIZE = 64  # pixels per side the vision tower sees
PATCH_SIZE = 16
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2  # 4 tokens per image


# Random weights almost never pick `"`, so every JSON string of a Q&A answer runs to its length cap and
# each answer to ~390 tokens. A logit bias on `"` (in the saved generation_config, which transformers
# applies at every step; the JSON grammar still decides where a quote may go) ends strings after a few
# tokens: ~290 tokens an answer instead of ~390. A few strings then close empty and those answers are
# recorded as unparsable, as a weak real model's would be.
QUOTE_BIAS = 3.0


def _text_config(tok, hidden: int = 64) -> dict:
    # head_dim 32: the smallest vLLM's CPU attention kernels take
    return dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2,
        max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )


def build_tiny_lm(out_dir: str | Path, seed: int = 0) -> Path:
    """A 2-layer Llama-architecture causal LM (about 0.2M parameters)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = save_pretrained_tokenizer(out, vocab_size=VOCAB_SIZE)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**_text_config(tok)))
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        sequence_bias=[[[tok.convert_tokens_to_ids('"')], QUOTE_BIAS]])
    model.save_pretrained(out)
    return out


def build_tiny_vlm(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny Idefics3: 2-layer SigLIP-style vision tower, pixel-shuffle connector, 2-layer Llama."""
    import torch
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )

    out = Path(out_dir)
    save_pretrained_tokenizer(out, vocab_size=VOCAB_SIZE, extra_special_tokens=IMAGE_TOKENS + ROW_COL_TOKENS)
    tok = PreTrainedTokenizerFast.from_pretrained(out)
    tok.chat_template = VLM_CHAT_TEMPLATE
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok,
                                  image_seq_len=IMAGE_SEQ_LEN, chat_template=VLM_CHAT_TEMPLATE)
    config = Idefics3Config(
        text_config=_text_config(tok),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        scale_factor=SCALE_FACTOR,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    # vLLM and older transformers read the template from the tokenizer config too
    tok.save_pretrained(out)
    return out


TINY_CLIP = "tiny-clip"


def build_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny CLIP (1-layer text and vision towers, 16-dim projections) for the evaluation's CLIPScore plumbing.
    Its tokenizer wraps each text in bos … eos, where CLIP's text tower pools."""
    import torch
    from tokenizers import processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    out = Path(out_dir)
    tok = save_pretrained_tokenizer(out, vocab_size=VOCAB_SIZE)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.bos_token} $A {tok.eos_token}",
        special_tokens=[(tok.bos_token, tok.bos_token_id), (tok.eos_token, tok.eos_token_id)])
    tok.save_pretrained(out)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


def build_tiny_models(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Build the tiny models under `out_dir`: the teacher VLM, the LM, the captioner recipes' student (another
    seed than the teacher's) and the evaluation's CLIP; returns {"vlm": …, "lm": …, "student": …, "clip": …}."""
    out = Path(out_dir)
    paths = {"vlm": build_tiny_vlm(out / "tiny-idefics3", seed), "lm": build_tiny_lm(out / "tiny-lm", seed),
             "student": build_tiny_vlm(out / TINY_STUDENT, seed + TINY_STUDENT_SEED),
             "clip": build_tiny_clip(out / TINY_CLIP, seed)}
    (out / "tiny_models.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return paths

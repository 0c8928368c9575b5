"""GPU training throughput of the captioner's trainer at SmolVLM-256M size (prepared for a GPU machine; nothing is
downloaded: random weights, an Idefics3 config of SmolVLM-256M's shape, the locally built tokenizer).

    python benchmarks/training/gpu_smolvlm_sized.py [--steps 30] [--batch 8] [--image-px 384]

bf16 LoRA on the text model (the `smolvlm-256m` recipe), 384-px images without splitting, page-context prompts of
~600 words. Prints samples/s, tokens/s and peak GPU memory (torch.cuda.max_memory_allocated) as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainer_vs_trl import write_data  # noqa: E402

from viscon_dagster.core.captioner.recipes import RECIPES  # noqa: E402
from viscon_dagster.demo.tiny_models import IMAGE_TOKENS, ROW_COL_TOKENS, VLM_CHAT_TEMPLATE  # noqa: E402
from viscon_dagster.demo.tiny_tokenizer import save_pretrained_tokenizer  # noqa: E402

# HuggingFaceTB/SmolVLM-256M-Instruct's shape: SmolLM2-135M text model, SigLIP-B/16 vision tower, pixel shuffle 4
TEXT = dict(vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-5,
            tie_word_embeddings=True)
VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)
SCALE = 4


def build(out: Path, image_px: int) -> Path:
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        PreTrainedTokenizerFast,
    )

    save_pretrained_tokenizer(out, vocab_size=1024, extra_special_tokens=IMAGE_TOKENS + ROW_COL_TOKENS)
    tok = PreTrainedTokenizerFast.from_pretrained(out)
    tok.chat_template = VLM_CHAT_TEMPLATE
    seq = (image_px // VISION["patch_size"]) ** 2 // SCALE**2
    ip = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": image_px},
                                max_image_size={"longest_edge": image_px})
    Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq,
                      chat_template=VLM_CHAT_TEMPLATE).save_pretrained(out)
    config = Idefics3Config(text_config={**TEXT, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                                         "pad_token_id": tok.pad_token_id},
                            vision_config={**VISION, "image_size": image_px}, scale_factor=SCALE,
                            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> int:
    import torch

    from viscon_dagster.training.train_captioner import _Printer, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-px", type=int, default=384)
    ap.add_argument("--prompt-words", type=int, default=600)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark is for a GPU machine", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    base = build(tmp / "smolvlm-256m-sized", a.image_px)
    write_data(tmp / "data" / "train.parquet", a.batch * a.steps, a.prompt_words)
    recipe = replace(RECIPES["smolvlm-256m"], base_model=str(base), longest_edge=a.image_px, max_steps=a.steps,
                     per_device_train_batch_size=a.batch, gradient_accumulation_steps=1, save_steps=10**6)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = train({"recipe": recipe.as_dict(), "base_model": str(base), "train_file": str(tmp / "data" /
                     "train.parquet"), "work_dir": str(tmp / "work")}, _Printer())
    print(json.dumps({
        "gpu": torch.cuda.get_device_name(0), "steps": summary["steps"], "batch": a.batch, "image_px": a.image_px,
        "samples_per_s": summary["train_samples_per_s"], "train_wall_s": summary["train_wall_s"],
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "trainable_params": summary["trainable_params"], "total_wall_s": round(time.perf_counter() - t0, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

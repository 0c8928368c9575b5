"""CLIPScore (Hessel et al. 2021): a reference-free image–caption score, w · max(cos(image, caption), 0), w = 2.5.

Any CLIP or SigLIP checkpoint transformers loads (`AutoModel` with `get_image_features` and
`get_text_features`), by hub id or folder: e.g. `openai/clip-vit-base-patch32` (the paper's ViT-B/32) or
`google/siglip-base-patch16-224`. Captions longer than the text tower's positions are cut to fit (CLIP: 77
tokens), as the paper does. The demo's and the tests' checkpoint is a tiny random CLIP
(`demo/tiny_models.build_tiny_clip`): its scores are noise, only the plumbing is real.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CLIPSCORE_W = 2.5


class ClipScorer:
    def __init__(self, model: str, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.torch = torch
        self.device = device
        self.batch_size = batch_size
        self.model = AutoModel.from_pretrained(model).to(device).eval()
        if not hasattr(self.model, "get_image_features") or not hasattr(self.model, "get_text_features"):
            raise ValueError(f"{model}: not an image–text dual encoder (CLIP, SigLIP)")
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.images = AutoImageProcessor.from_pretrained(model)
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.max_length = int(getattr(text_config, "max_position_embeddings", 77))
        self.siglip = "siglip" in self.model.config.model_type

    def _features(self, out):
        t = getattr(out, "pooler_output", out)  # transformers 5 returns an output object, 4 a tensor
        return self.torch.nn.functional.normalize(t.float(), dim=-1)

    def image_embeddings(self, images: Sequence) -> np.ndarray:
        chunks = []
        with self.torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                pixels = self.images(images=list(images[i:i + self.batch_size]), return_tensors="pt")
                out = self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
                chunks.append(self._features(out).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))

    def text_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        chunks = []
        padding = "max_length" if self.siglip else True  # SigLIP was trained on max-length padding
        with self.torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(list(texts[i:i + self.batch_size]), padding=padding, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                kwargs = {"input_ids": enc["input_ids"].to(self.device)}
                if "attention_mask" in enc and not self.siglip:
                    kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
                chunks.append(self._features(self.model.get_text_features(**kwargs)).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0))

    def scores(self, image_embeddings: np.ndarray, captions: Sequence[str]) -> np.ndarray:
        """CLIPScore of each caption with its image (row i of `image_embeddings`)."""
        text = self.text_embeddings(captions)
        return CLIPSCORE_W * np.clip((image_embeddings * text).sum(axis=1), 0.0, None)

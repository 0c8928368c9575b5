"""CLIPScore's plumbing on a tiny random CLIP (its values are noise): shapes, the w·max(cos, 0) form, batching."""

from __future__ import annotations

import numpy as np
from PIL import Image

from viscon_dagster.core.captioner.clipscore import CLIPSCORE_W, ClipScorer


def test_clipscore_is_w_times_the_clipped_cosine_of_normalised_embeddings(tiny_clip_dir):
    scorer = ClipScorer(str(tiny_clip_dir), batch_size=2)  # batches of 2: the last one is short
    images = [Image.new("RGB", (40 + 7 * i, 30), (30 * i, 90, 200 - 20 * i)) for i in range(5)]
    captions = ["a red door in Lisbon.", "", "a very long caption " * 40, "boats", "the harbour at dawn"]
    img = scorer.image_embeddings(images)
    txt = scorer.text_embeddings(captions)
    assert img.shape == txt.shape == (5, scorer.model.config.projection_dim)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    scores = scorer.scores(img, captions)  # an over-long caption is cut to the text tower's 77 positions
    np.testing.assert_allclose(scores, CLIPSCORE_W * np.clip((img * txt).sum(axis=1), 0, None), atol=1e-5)
    assert scores.shape == (5,) and (scores >= 0).all() and (scores <= CLIPSCORE_W).all()
    # the same caption and image score the same whatever else is in the batch
    again = scorer.scores(img[[3, 0]], [captions[3], captions[0]])
    np.testing.assert_allclose(again, scores[[3, 0]], atol=1e-5)

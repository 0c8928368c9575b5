"""Fixtures of the model-backend tests: the loopback OpenAI double, tiny models, images in storage."""

from __future__ import annotations

import hashlib
import io

import pytest

from tests.models.openai_double import OpenAIDouble


@pytest.fixture
def double():
    d = OpenAIDouble().start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from viscon_dagster.demo.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def png_bytes(colour: str = "red", size=(40, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def storage_root(tmp_path):
    from upath import UPath

    return UPath(tmp_path.as_uri())


@pytest.fixture
def image_ref(storage_root):
    from viscon_dagster.core.models.request import ImageRef

    data = png_bytes()
    p = storage_root / "images" / "red.png"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return ImageRef.from_path(p, sha256=hashlib.sha256(data).hexdigest())

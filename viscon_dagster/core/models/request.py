"""What every model call is: chat messages (text and images from our storage), an optional JSON schema,
sampling parameters; and what comes back.

A request's fingerprint is a sha256 over the model id, the messages (images by their sha256, never by
location or bytes), the sampling parameters and the schema. It keys the pay-once journal, so any change
that could change the answer changes the fingerprint, and nothing else does (`meta` is the caller's
bookkeeping and is left out).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FINGERPRINT_VERSION = 1


def unreadable_image(error: BaseException, images: list[ImageRef]) -> str:
    """Why a request's image could not be read, naming the image by its sha256, never by a path of this machine
    (an OSError's message holds the path: only its errno text is kept)."""
    what = getattr(error, "strerror", None) or type(error).__name__
    shas = ", ".join(i.sha256[:12] for i in images) or "none"
    return f"an image of the request could not be read ({type(error).__name__}: {what}; images {shas})"


class ImageRef(BaseModel):
    """An image in our storage: its URL (`file://`, `s3://`, `https://`), fsspec options, and sha256."""

    model_config = ConfigDict(frozen=True)

    url: str
    sha256: str
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)
    mime: str | None = None

    @classmethod
    def from_path(cls, path, sha256: str | None = None, mime: str | None = None) -> ImageRef:
        """From a `UPath` (its storage options travel with it); hashes the bytes if no sha256 is given."""
        if sha256 is None:
            sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(url=str(path), sha256=sha256, storage_options=dict(getattr(path, "storage_options", {})),
                   mime=mime)

    def path(self):
        from upath import UPath
        return UPath(self.url, **self.storage_options)

    def read_bytes(self) -> bytes:
        return self.path().read_bytes()

    def sniff_mime(self, data: bytes) -> str:
        if self.mime:
            return self.mime
        for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif"),
                            (b"RIFF", "image/webp")):
            if data.startswith(magic):
                return mime
        return "image/jpeg"

    def data_url(self) -> str:
        data = self.read_bytes()
        return f"data:{self.sniff_mime(data)};base64,{base64.b64encode(data).decode()}"

    def pil(self):
        import io

        from PIL import Image
        return Image.open(io.BytesIO(self.read_bytes())).convert("RGB")


class Part(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["text", "image"]
    text: str | None = None
    image: ImageRef | None = None

    @classmethod
    def of_text(cls, text: str) -> Part:
        return cls(type="text", text=text)

    @classmethod
    def of_image(cls, image: ImageRef) -> Part:
        return cls(type="image", image=image)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str | list[Part]

    def parts(self) -> list[Part]:
        return [Part.of_text(self.content)] if isinstance(self.content, str) else list(self.content)

    def images(self) -> list[ImageRef]:
        return [p.image for p in self.parts() if p.type == "image" and p.image is not None]

    def text(self) -> str:
        return "".join(p.text or "" for p in self.parts() if p.type == "text")


class SamplingParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None


class Request(BaseModel):
    """One chat completion. `json_schema` asks for structured output; `meta` is never sent or hashed."""

    model_config = ConfigDict(frozen=True)

    messages: list[Message]
    json_schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    params: SamplingParams = Field(default_factory=SamplingParams)
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def user(cls, text: str, images: list[ImageRef] = (), system: str | None = None, **kw) -> Request:
        """A one-turn request: the images first, then the text (the layout VLM chat templates expect)."""
        msgs = [Message(role="system", content=system)] if system else []
        msgs.append(Message(role="user", content=[*(Part.of_image(i) for i in images), Part.of_text(text)]))
        return cls(messages=msgs, **kw)

    def images(self) -> list[ImageRef]:
        return [i for m in self.messages for i in m.images()]

    def canonical(self, model: str) -> dict[str, Any]:
        msgs = [{"role": m.role,
                 "content": [{"type": "text", "text": p.text} if p.type == "text"
                             else {"type": "image", "sha256": p.image.sha256} for p in m.parts()]}
                for m in self.messages]
        return {"v": FINGERPRINT_VERSION, "model": model, "messages": msgs,
                "params": self.params.model_dump(), "schema": self.json_schema,
                "schema_name": self.schema_name if self.json_schema else None}

    def fingerprint(self, model: str) -> str:
        blob = json.dumps(self.canonical(model), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens)


# ok: an answer (parsed when a schema was asked for); refused: the model declined; unparsable: no
# schema-valid JSON even after the repair retry; error: no answer (transport or server failure after
# retries, bad request) — the only status that is not journaled, so a rerun tries again.
Status = Literal["ok", "refused", "unparsable", "error"]


class Response(BaseModel):
    fingerprint: str
    model: str
    backend: str
    status: Status
    text: str | None = None
    parsed: Any = None
    error_kind: str | None = None  # e.g. rate_limited, server_error, timeout, connection, bad_request
    error: str | None = None
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    attempts: int = 1  # HTTP calls made, repair retry included
    batch: bool = False  # answered through a batch API (priced at the batch discount)
    cached: bool = False  # served from the journal: cost nothing this run
    created_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def journaled(self) -> bool:
        return self.status != "error"

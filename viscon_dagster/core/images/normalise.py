"""Validate, decode and normalise one image (pure function of the bytes; runs in a worker pool).

Steps: sha256 of the original bytes; identify the format (only `allowed_formats`); refuse more
pixels than `max_pixels` from the header, before decoding (decompression bombs); size and aspect
filters on the original size; decode (JPEGs straight at a reduced DCT scale when they will be
shrunk anyway: most of the speed); first frame of animations; EXIF orientation; RGB (alpha
composited on white; CMYK and palette converted); long edge <= `max_side` (area averaging by
default); JPEG re-encode; perceptual hash of the result.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import imagehash
from PIL import Image, ImageOps, UnidentifiedImageError

from . import statuses as st


@dataclass(frozen=True)
class NormaliseParams:
    min_side: int
    max_aspect_ratio: float
    max_side: int
    jpeg_quality: int
    max_pixels: int
    allowed_formats: tuple[str, ...]
    resample: str = "box"


@dataclass
class Normalised:
    status: str
    error: str | None
    sha256: str
    original_format: str | None = None
    original_width: int | None = None
    original_height: int | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None
    jpeg: bytes | None = None


_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
RESAMPLING = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
              "bilinear": Image.Resampling.BILINEAR, "box": Image.Resampling.BOX}


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit greyscale: scale down to 8 bits
        im = im.point(lambda v: v * (1 / 256)).convert("L")
    return im if im.mode == "RGB" else im.convert("RGB")


def normalise(data: bytes, p: NormaliseParams) -> Normalised:
    sha = hashlib.sha256(data).hexdigest()
    try:
        # Pillow's own bomb check (2x Image.MAX_IMAGE_PIXELS) may fire first; our limit follows
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        return Normalised(st.DECOMPRESSION_BOMB, str(e), sha)
    except UnidentifiedImageError:
        return Normalised(st.NOT_IMAGE, "not a decodable image", sha)
    except Exception as e:  # noqa: BLE001 - a broken header is a decode error, whatever Pillow raises
        return Normalised(st.DECODE_ERROR, f"{type(e).__name__}: {e}", sha)
    fmt = im.format
    out = Normalised(st.OK, None, sha, original_format=fmt)
    if fmt not in p.allowed_formats:
        out.status, out.error = st.NOT_IMAGE, f"format {fmt} not accepted"
        return out
    w, h = im.size
    try:
        orientation = im.getexif().get(0x0112) or 1
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the stored orientation
        orientation = 1
    if orientation in _ROTATED:
        w, h = h, w
    out.original_width, out.original_height = w, h
    if w * h > p.max_pixels:
        out.status, out.error = st.DECOMPRESSION_BOMB, f"{w}x{h} = {w * h} pixels > max_pixels {p.max_pixels}"
        return out
    if min(w, h) < p.min_side:
        out.status, out.error = st.TOO_SMALL, f"{w}x{h}: a side is under min_side {p.min_side}"
        return out
    if max(w, h) / min(w, h) > p.max_aspect_ratio:
        out.status, out.error = st.BAD_ASPECT, f"{w}x{h}: aspect ratio over {p.max_aspect_ratio}"
        return out
    scale = min(1.0, p.max_side / max(w, h))
    try:
        if scale < 1.0 and fmt in ("JPEG", "MPO"):
            # decode at 1/2, 1/4 or 1/8 scale, still at least the target size (no quality loss)
            im.draft(None, (max(1, int(im.size[0] * scale)), max(1, int(im.size[1] * scale))))
        im.seek(0)  # first frame of animations
        im.load()
        if orientation != 1:  # (exif_transpose copies the image even when there is nothing to do)
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - broken EXIF: keep the stored orientation
                pass
        im = _to_rgb(im)
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        if im.size != target:
            im = im.resize(target, RESAMPLING[p.resample], reducing_gap=3.0)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=p.jpeg_quality)
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data, unsupported modes
        out.status, out.error = st.DECODE_ERROR, f"{type(e).__name__}: {e}"
        return out
    out.width, out.height = im.size
    # phash works on 32x32 greyscale; shrinking first (box, to a short side of 128-255 px) gives the
    # same kind of hash for a fraction of the cost
    factor = max(1, min(im.size) // 128)
    out.phash = str(imagehash.phash(im.reduce(factor) if factor > 1 else im))
    out.jpeg = buf.getvalue()
    return out

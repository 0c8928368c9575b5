"""Real loopback servers for the image tests: an aiohttp app with every fault route, a raw TCP
server for responses aiohttp will not produce (lying or short Content-Length), and moto's S3."""

from __future__ import annotations

import asyncio
import io
import os
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from aiohttp import web
from PIL import Image, ImageDraw

from viscon_dagster.core.images import ImageSettings


def photo(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """A photo-like RGB image: random shapes on a gradient; distinct seeds give distinct phashes."""
    rng = random.Random(seed)
    w, h = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(20, w // 2), y0 + rng.randrange(20, h // 2)
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    return im


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def make_images() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type)."""
    base = photo(1)
    big = photo(9, (2400, 1800))
    frames = [photo(4), photo(40)]
    rgba = photo(6).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    images = {
        "good.jpg": (encode(base, "JPEG", quality=90), "image/jpeg"),
        "good.png": (encode(photo(2), "PNG"), "image/png"),
        "good.webp": (encode(photo(3), "WEBP"), "image/webp"),
        "anim.gif": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100), "image/gif"),
        "cmyk.jpg": (encode(photo(5).convert("CMYK"), "JPEG"), "image/jpeg"),
        "rgba.png": (encode(rgba, "PNG"), "image/png"),
        "palette.png": (encode(photo(7).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0),
                        "image/png"),
        "big.jpg": (encode(big, "JPEG", quality=92), "image/jpeg"),
        # same picture re-encoded at another quality and size: a near duplicate of good.jpg
        "near.jpg": (encode(base.resize((400, 300)), "JPEG", quality=60), "image/jpeg"),
        "tiny.png": (encode(photo(8, (60, 60)), "PNG"), "image/png"),
        "wide.png": (encode(photo(10, (1200, 200)), "PNG"), "image/png"),
        # 10,000 x 10,000 one-bit pixels: ~25 KB on the wire, 100 MP decoded
        "bomb.png": (encode(Image.new("1", (10_000, 10_000)), "PNG"), "image/png"),
        "html_as.jpg": (b"<!doctype html><html><body>not an image</body></html>", "image/jpeg"),
    }
    for i in range(20, 26):  # spare distinct images for resume / s3 / file tests
        images[f"p{i}.jpg"] = (encode(photo(i), "JPEG"), "image/jpeg")
    return images


@dataclass
class Server:
    base: str  # http://127.0.0.1:port
    raw_base: str  # raw TCP server for malformed responses
    images: dict[str, tuple[bytes, str]]
    hits: Counter = field(default_factory=Counter)
    times: dict[str, list[float]] = field(default_factory=dict)
    active: int = 0
    max_active: int = 0
    user_agents: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def reset(self) -> None:
        self.hits.clear()
        self.times.clear()
        self.max_active = 0
        self.user_agents.clear()


ROBOTS = "User-agent: *\nDisallow: /private/\n"
BIG = 3 * 1024 * 1024  # test settings use max_bytes = 1 MiB


def build_app(srv: Server) -> web.Application:
    routes = web.RouteTableDef()

    @web.middleware
    async def count(request: web.Request, handler):
        srv.hits[request.path] += 1
        srv.times.setdefault(request.path, []).append(time.monotonic())
        srv.user_agents.add(request.headers.get("User-Agent", ""))
        if not request.path.startswith("/sleep/"):
            return await handler(request)
        srv.active += 1  # concurrency gauge for the /sleep/ routes
        srv.max_active = max(srv.max_active, srv.active)
        try:
            return await handler(request)
        finally:
            srv.active -= 1

    def image(name: str, **headers: str) -> web.Response:
        data, ctype = srv.images[name]
        return web.Response(body=data, content_type=ctype, headers=headers)

    @routes.get("/robots.txt")
    async def robots(request):
        if request.host.startswith("localhost"):  # the same server under another origin: robots.txt fails
            return web.Response(status=500)
        return web.Response(text=ROBOTS)

    @routes.get("/img/{name}")
    async def img(request):
        return image(request.match_info["name"])

    @routes.get("/copy/{name}")  # the same bytes under another URL
    async def copy(request):
        return image(request.match_info["name"])

    @routes.get("/private/{name}")  # disallowed by robots.txt
    async def private(request):
        return image(request.match_info["name"])

    @routes.get("/status/{code}")
    async def status(request):
        return web.Response(status=int(request.match_info["code"]), text="no")

    @routes.get("/flaky/{name}")  # 500 on the first request, then the image
    async def flaky(request):
        if srv.hits[request.path] == 1:
            return web.Response(status=500, text="oops")
        return image(request.match_info["name"])

    @routes.get("/ratelimited/{name}")  # 429 Retry-After: 1 first, then the image
    async def ratelimited(request):
        if srv.hits[request.path] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return image(request.match_info["name"])

    @routes.get("/ratelimited_long")
    async def ratelimited_long(_):
        return web.Response(status=429, headers={"Retry-After": "3600"})

    @routes.get("/sleep/{ms}/{name}")  # a slow but fine image; name is free (distinct URLs)
    async def sleep(request):
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return image("p25.jpg")

    @routes.get("/slow")
    async def slow(_):
        await asyncio.sleep(10)
        return image("good.jpg")

    @routes.get("/drip")  # slowloris: a byte every 0.2 s, each within the read timeout, forever
    async def drip(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await resp.prepare(request)
        try:
            for _ in range(1000):
                await resp.write(b"\xff")
                await asyncio.sleep(0.2)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    @routes.get("/big")  # honest Content-Length over the limit
    async def big(_):
        return web.Response(body=b"\xff\xd8" + b"\0" * BIG, content_type="image/jpeg")

    @routes.get("/big_chunked")  # no Content-Length, an endless body
    async def big_chunked(request):
        resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(10_000):
                await resp.write(b"\0" * 65536)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    @routes.get("/html")
    async def html(_):
        return web.Response(text="<html><body>hello</body></html>", content_type="text/html")

    @routes.get("/xrobots/{value}")
    async def xrobots(request):
        return image("p20.jpg", **{"X-Robots-Tag": request.match_info["value"]})

    @routes.get("/redirect/{n}")
    async def redirect(request):
        n = int(request.match_info["n"])
        raise web.HTTPFound(f"/redirect/{n - 1}" if n > 1 else "/img/p21.jpg")

    @routes.get("/loop/{side}")
    async def loop(request):
        raise web.HTTPFound("/loop/b" if request.match_info["side"] == "a" else "/loop/a")

    @routes.get("/to")  # redirect anywhere: /to?url=...
    async def to(request):
        raise web.HTTPFound(request.query["url"])

    app = web.Application(middlewares=[count])
    app.add_routes(routes)
    return app


async def raw_handler(srv: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`/truncated`: declares 50,000 bytes, sends 20,000, closes. `/lying`: declares 1,000 bytes
    (under the limit) and sends megabytes: a client must not read past the declared length."""
    try:
        line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        path = line.split(" ")[1] if " " in line else "/"
        srv.hits["raw" + path] += 1
        jpeg = srv.images["big.jpg"][0]
        if path == "/robots.txt":
            body = ROBOTS.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        elif path == "/truncated":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 50000\r\n\r\n")
            writer.write(jpeg[:20000])
        elif path == "/lying":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n")
            writer.write(jpeg[:1000] + b"\0" * (4 * 1024 * 1024))
        else:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    loop = asyncio.new_event_loop()
    port, raw_port = free_port(), free_port()
    srv = Server(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{raw_port}", make_images())
    runner = web.AppRunner(build_app(srv), shutdown_timeout=0.5)

    async def start():
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return await asyncio.start_server(lambda r, w: raw_handler(srv, r, w), "127.0.0.1", raw_port)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    raw = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    yield srv

    async def stop():
        raw.close()
        await runner.cleanup()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture(scope="session")
def imaging():
    """The image makers, for tests that build their own bytes."""
    return SimpleNamespace(photo=photo, encode=encode)


@pytest.fixture
def settings() -> ImageSettings:
    """Fast, strict settings for loopback tests: 127.0.0.1 explicitly allow-listed."""
    return ImageSettings(
        allowed_hosts=("127.0.0.1",), retries=1, retry_backoff_s=0.05, connect_timeout_s=1,
        read_timeout_s=0.5, total_timeout_s=3, max_bytes=1024 * 1024, cpu_workers=2,
        max_retry_after_s=5)


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 on loopback; yields (endpoint_url, storage options)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    motoserver = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    motoserver.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield endpoint, {"client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                     "key": "testing", "secret": "testing"}
    motoserver.stop()


@pytest.fixture
def bucket(moto_s3):
    """A fresh bucket on the loopback S3 server: (name, boto3 client, endpoint, storage options)."""
    import boto3

    endpoint, options = moto_s3
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"b{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=name)
    return name, s3, endpoint, options

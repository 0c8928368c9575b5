"""SSRF guard, robots and X-Robots-Tag parsing, politeness bounds, normalisation details."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import pytest
from PIL import Image
from upath import UPath

from viscon_dagster.core.images import ImageRequest, ImageSettings, fetch_images
from viscon_dagster.core.images.dedup import find_duplicates
from viscon_dagster.core.images.fetch import HttpFetcher, parse_retry_after
from viscon_dagster.core.images.normalise import NormaliseParams, normalise
from viscon_dagster.core.images.robots import x_robots_opt_out
from viscon_dagster.core.images.safety import AddressGuard, BlockedAddressError, GuardedResolver, Refused


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://10.1.2.3/", "http://192.168.0.1/", "http://172.16.5.4/",
    "http://169.254.169.254/latest/meta-data/", "http://[::1]/", "http://[fe80::1]/", "http://0.0.0.0/",
    "http://224.0.0.1/", "http://240.0.0.1/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/",
    "http://[fc00::1]/", "http://localhost/", "http://2130706433/", "http://0x7f.1/",
])
def test_guard_refuses_non_public_addresses(url):
    with pytest.raises(Refused) as err:
        asyncio.run(AddressGuard().check_url(url))
    assert err.value.status == "blocked_address"


def test_guard_allow_lists_hosts_and_networks_only():
    async def check(guard, url):
        await guard.check_url(url)

    asyncio.run(check(AddressGuard(allowed_hosts=("127.0.0.1",)), "http://127.0.0.1:8080/x"))
    asyncio.run(check(AddressGuard(allowed_networks=("10.0.0.0/8",)), "http://10.9.9.9/x"))
    asyncio.run(check(AddressGuard(), "http://8.8.8.8/x"))  # public: no resolution, no traffic
    with pytest.raises(Refused):
        asyncio.run(check(AddressGuard(allowed_networks=("10.0.0.0/8",)), "http://192.168.1.1/x"))


def test_resolver_refuses_at_connect_time():
    """Defence against DNS rebinding: aiohttp's resolver itself refuses non-public answers."""
    async def resolve():
        return await GuardedResolver(AddressGuard()).resolve("localhost", 80)

    with pytest.raises(BlockedAddressError):
        asyncio.run(resolve())


def test_blocked_redirect_target_gets_no_request():
    async def go():
        async with HttpFetcher(ImageSettings()) as f:
            with pytest.raises(Refused) as err:
                await f.fetch("http://10.0.0.1/x.jpg", max_bytes=1000)
            return f.requests_made, err.value

    made, err = asyncio.run(go())
    assert made == 0 and err.status == "blocked_address"


@pytest.mark.parametrize(("values", "expected"), [
    (["noai"], "noai"),
    (["noindex, nofollow"], "noindex"),
    (["NoImageAI"], "noimageai"),
    (["otherbot: noai"], None),
    (["viscon-dagster: noai"], "noai"),
    (["nofollow", "noimageai"], "noimageai"),
    (["unavailable_after: 25 Jun 2030 15:00:00 PST"], None),
    ([], None),
])
def test_x_robots_tag(values, expected):
    assert x_robots_opt_out(values, "viscon-dagster", ("noai", "noimageai", "noindex", "noimageindex")) == expected


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def reqs(urls):
    return [ImageRequest(f"d{i}", "https://example.org", i, u) for i, u in enumerate(urls)]


def test_per_host_concurrency_bound_and_user_agent(server, settings, tmp_path):
    server.reset()
    urls = [server.url(f"/sleep/150/{i}") for i in range(8)]
    s = dataclasses.replace(settings, per_host_concurrency=2, near_duplicate_distance=-1)
    result = fetch_images(reqs(urls), UPath(tmp_path), s)
    assert result.status_counts == {"duplicate": 7, "ok": 1}  # the same bytes under 8 URLs
    assert server.max_active == 2
    assert server.user_agents == {s.user_agent}


def test_per_host_requests_per_second(server, settings, tmp_path):
    server.reset()
    urls = [server.url(f"/sleep/0/r{i}") for i in range(5)]
    fetch_images(reqs(urls), UPath(tmp_path), dataclasses.replace(settings, per_host_rps=5, respect_robots_txt=False))
    times = sorted(server.times[f"/sleep/0/r{i}"][0] for i in range(5))
    assert times[-1] - times[0] >= 0.6  # 5 requests at 5/s: about 0.8 s from first to last


def test_robots_txt_can_be_turned_off(server, settings, tmp_path):
    server.reset()
    s = dataclasses.replace(settings, respect_robots_txt=False)
    result = fetch_images(reqs([server.url("/private/p24.jpg")]), UPath(tmp_path), s)
    assert result.status_counts == {"ok": 1} and server.hits["/robots.txt"] == 0


def test_failing_robots_txt_disallows_the_origin(server, settings, tmp_path):
    """RFC 9309: a robots.txt answering 5xx means complete disallow."""
    server.reset()
    s = dataclasses.replace(settings, allowed_hosts=("127.0.0.1", "localhost"))
    url = server.url("/img/p20.jpg").replace("127.0.0.1", "localhost")
    result = fetch_images(reqs([url]), UPath(tmp_path), s)
    assert result.table.column("status").to_pylist() == ["robots_disallowed"]
    assert "HTTP 500" in result.table.column("error")[0].as_py()
    assert server.hits["/img/p20.jpg"] == 0


P = NormaliseParams(min_side=150, max_aspect_ratio=3.0, max_side=1024, jpeg_quality=90, max_pixels=80_000_000,
                    allowed_formats=("JPEG", "PNG", "WEBP", "GIF"))


def test_exif_orientation_is_applied(imaging):
    im = imaging.photo(30, (600, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = normalise(imaging.encode(im, "JPEG", exif=exif), P)
    assert out.status == "ok"
    assert (out.original_width, out.original_height) == (300, 600) == (out.width, out.height)


def test_alpha_is_composited_on_white(imaging):
    im = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    out = normalise(imaging.encode(im, "PNG"), P)
    decoded = Image.open(io.BytesIO(out.jpeg))
    assert decoded.mode == "RGB" and min(decoded.getpixel((100, 100))) > 245


def test_first_frame_of_animation(imaging):
    frames = [Image.new("RGB", (200, 200), c) for c in ((255, 0, 0), (0, 0, 255))]
    out = normalise(imaging.encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), P)
    r, g, b = Image.open(io.BytesIO(out.jpeg)).getpixel((100, 100))
    assert r > 200 and b < 50


def test_format_outside_allowed_is_not_image(imaging):
    out = normalise(imaging.encode(imaging.photo(31), "BMP"), P)
    assert out.status == "not_image" and "BMP" in out.error


def test_truncated_jpeg_is_decode_error(imaging):
    data = imaging.encode(imaging.photo(32), "JPEG")
    out = normalise(data[: len(data) // 2], P)
    assert out.status == "decode_error" and out.sha256


def test_small_image_is_not_upscaled(imaging):
    out = normalise(imaging.encode(imaging.photo(33, (300, 200)), "PNG"), P)
    assert (out.width, out.height) == (300, 200)


def test_find_duplicates_is_order_based_and_threshold_bound():
    items = [("a", "0000000000000000"), ("b", "0000000000000007"), ("c", "00000000000000ff"), ("a", "0")]
    assert find_duplicates(items, 3) == [None, "a", None, "a"]
    assert find_duplicates(items, -1) == [None, None, None, "a"]
    assert find_duplicates(items, 8) == [None, "a", "a", "a"]

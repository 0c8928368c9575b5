"""Opt-outs: X-Robots-Tag response headers and robots.txt (fetched once per origin, cached)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser


def x_robots_opt_out(values: Iterable[str], robots_token: str, directives: Iterable[str]) -> str | None:
    """The first opted-out directive in X-Robots-Tag header values, else None.

    A value is either `noai, noimageai` (for every agent) or `agent: noai` (only for `agent`),
    as in img2dataset; a value for another agent is ignored.
    """
    wanted = {d.lower() for d in directives}
    token = robots_token.lower()
    for value in values:
        agent, sep, rest = value.partition(":")
        if sep and agent.strip().lower() not in (token, "*"):
            # `unavailable_after: <date>` also lands here; it is no opt-out we honour
            continue
        for directive in (rest if sep else value).split(","):
            if directive.strip().lower() in wanted:
                return directive.strip().lower()
    return None


RobotsFetch = Callable[[str], Awaitable[tuple[int, str]]]
"""Fetch a robots.txt URL: (HTTP status, text); raises on network errors."""


class RobotsCache:
    """One robots.txt per origin for the whole run, following RFC 9309:
    2xx: parse; 4xx: no rules (allow all); 5xx or unreachable: disallow all."""

    def __init__(self, fetch: RobotsFetch, robots_token: str):
        self._fetch = fetch
        self._token = robots_token
        self._parsers: dict[str, asyncio.Future[tuple[RobotFileParser | None, str]]] = {}

    async def _load(self, origin: str) -> tuple[RobotFileParser | None, str]:
        """(parser, reason); parser None means disallow all."""
        try:
            code, text = await self._fetch(origin + "/robots.txt")
        except Exception as e:  # noqa: BLE001 - any failure to reach robots.txt is "unreachable"
            return None, f"robots.txt unreachable ({type(e).__name__}: {e})"
        parser = RobotFileParser()
        if 200 <= code < 300:
            parser.parse(text.splitlines())
        elif 400 <= code < 500:
            parser.parse([])
        else:
            return None, f"robots.txt answered HTTP {code}"
        return parser, ""

    async def allowed(self, url: str) -> tuple[bool, str]:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._parsers:
            self._parsers[origin] = asyncio.ensure_future(self._load(origin))
        parser, reason = await asyncio.shield(self._parsers[origin])
        if parser is None:
            return False, reason
        if parser.can_fetch(self._token, url):
            return True, ""
        return False, f"robots.txt of {origin} disallows {parts.path or '/'} for {self._token}"

"""SSRF guard and local-file guard.

The guard resolves a host and refuses it when any of its addresses is loopback, private,
link-local, multicast, reserved, unspecified or otherwise not globally routable, unless the host
or the address is allow-listed. It runs before every request hop (so every redirect is checked
before a connection is made) and again inside aiohttp's resolver (`GuardedResolver`), so a DNS
answer that changes between the check and the connect (rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """A request that ends without an image; `status` is the row status, the message its error."""

    def __init__(self, status: str, message: str, *, http_status: int | None = None, bytes_in: int = 0):
        super().__init__(message)
        self.status = status
        self.http_status = http_status
        self.bytes_in = bytes_in


class BlockedAddressError(OSError):
    """Raised inside aiohttp's resolver; an OSError so aiohttp wraps it as a connection error."""


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_private
                                 or ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class AddressGuard:
    def __init__(self, allowed_hosts: tuple[str, ...] = (), allowed_networks: tuple[str, ...] = ()):
        self.allowed_hosts = {h.lower().strip("[]") for h in allowed_hosts}
        self.allowed_networks = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._cache: dict[tuple[str, int], asyncio.Future[list[str]]] = {}

    def address_allowed(self, ip: IPAddress) -> bool:
        return is_public(ip) or str(ip) in self.allowed_hosts or any(
            ip in net for net in self.allowed_networks if ip.version == net.version)

    def check_addresses(self, host: str, addresses: list[str]) -> None:
        if host.lower() in self.allowed_hosts:
            return
        if not addresses:
            raise BlockedAddressError(f"{host} resolved to no address")
        for a in addresses:
            ip = ipaddress.ip_address(a.split("%")[0])  # drop an IPv6 zone id
            if not self.address_allowed(ip):
                raise BlockedAddressError(f"{host} resolves to non-public address {ip}")

    async def resolve(self, host: str, port: int) -> list[str]:
        """Addresses of `host`, cached for the run (concurrent callers share one lookup)."""
        key = (host, port)
        if key not in self._cache:
            fut = asyncio.get_running_loop().create_future()
            self._cache[key] = fut
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM)
                fut.set_result(sorted({info[4][0] for info in infos}))
            except OSError as e:
                fut.set_exception(e)
                fut.exception()  # mark retrieved; callers re-raise below
        return await asyncio.shield(self._cache[key])

    async def check_url(self, url: str) -> None:
        """Refuse `url` (status blocked_address) unless every address of its host is allowed."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
        ip = parse_ip(host)
        try:
            if ip is not None:
                self.check_addresses(host, [str(ip)])
            elif host not in self.allowed_hosts:
                self.check_addresses(host, await self.resolve(host, port))
        except BlockedAddressError as e:
            raise Refused("blocked_address", str(e)) from None


class GuardedResolver(ThreadedResolver):
    """aiohttp resolver that refuses non-allowed addresses at connect time."""

    def __init__(self, guard: AddressGuard):
        super().__init__()
        self.guard = guard

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):  # type: ignore[override]
        results = await super().resolve(host, port, family)
        self.guard.check_addresses(host, [r["host"] for r in results])
        return results


def file_url_path(url: str, allowed_roots: tuple[str, ...]) -> Path:
    """The local path of a file URL, if it lies (symlinks resolved) inside an allowed root. An absolute URL
    (`file:///data/img/a.jpg`) names one file; a relative one (`file:ab/a.jpg`) is looked up under each allowed
    root in turn, so a corpus can name its images without naming the machine that serves them."""
    parts = urlsplit(url)
    if not allowed_roots:
        raise Refused("blocked_scheme", "file:// URLs are refused: no allowed_file_roots configured")
    if parts.netloc not in ("", "localhost"):
        raise Refused("blocked_path", f"file URL names a remote host: {parts.netloc}")
    roots = [os.path.realpath(url2pathname(urlsplit(r).path) if r.startswith("file:") else r) for r in allowed_roots]
    relative = url2pathname(parts.path)
    if not parts.path.startswith("/"):
        if ".." in Path(relative).parts:
            raise Refused("blocked_path", f"{relative} climbs out of the allowed file roots")
        # the first root holding the name decides (a link there out of the root is refused below)
        found = next((os.path.join(r, relative) for r in roots if os.path.lexists(os.path.join(r, relative))), None)
        if found is None:
            return Path(roots[0], relative)  # read as not found
        relative = found
    path = Path(os.path.realpath(relative))
    for root in roots:
        if path.is_relative_to(root):
            return path
    raise Refused("blocked_path", f"{path} is outside the allowed file roots")

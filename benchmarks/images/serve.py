"""Static loopback image server for the benchmark: one folder served on several 127.0.0.1 ports.

Each port is its own origin (host:port), so per-host politeness bounds apply per port, as they would
across web hosts. robots.txt allows everything.

    python benchmarks/images/serve.py --root benchmarks/.data/images/src --ports 8 --port-file ports.txt
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--ports", type=int, default=8)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()

    async def robots(_):
        return web.Response(text="User-agent: *\nAllow: /\n")

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    app.router.add_static("/img/", args.root)  # sendfile
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(args.ports):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])  # noqa: SLF001 - port 0: ask the socket
    Path(args.port_file).write_text("\n".join(map(str, ports)))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())

"""A loopback stand-in for the Hugging Face Hub — a test double, because the Hub cannot be reached from here.

It answers only the routes `huggingface_hub`'s `hf://` filesystem (and `datasets` through it) calls for a public
dataset repository, serving a local folder as the repository's files at one commit:
    GET  /api/datasets/<repo>[/revision/<rev>]       repository info (its commit sha)
    GET  /api/agent-harnesses                        (huggingface_hub 2.x asks; answered with none)
    GET  /api/datasets/<repo>/tree/<rev>[/<path>]    a folder's entries
    POST /api/datasets/<repo>/paths-info/<rev>       entries of named paths
    GET|HEAD /datasets/<repo>/resolve/<rev>/<path>   a file's bytes, Range requests included
Point a process at it with HF_ENDPOINT. Every request is recorded (`requests`); any other route answers 404 and is
recorded in `unknown`, so a test sees a route the real Hub would have answered."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

from aiohttp import web

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubDouble:
    def __init__(self, repo_id: str, folder: Path):
        self.repo_id, self.folder = repo_id, folder
        self.requests: list[str] = []
        self.unknown: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # --- the repository's files -----------------------------------------------------------------------------
    def _entry(self, path: Path) -> dict:
        rel = path.relative_to(self.folder).as_posix()
        if path.is_dir():
            return {"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "size": 0, "path": rel}
        data = path.read_bytes()
        return {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": rel,
                "lastCommit": {"id": COMMIT, "title": "add shards", "date": "2024-01-01T00:00:00.000Z"}}

    def _resolve(self, rel: str) -> Path | None:
        path = (self.folder / rel).resolve()
        return path if path.exists() and path.is_relative_to(self.folder.resolve()) else None

    # --- routes ---------------------------------------------------------------------------------------------
    async def _route(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path_qs}")
        path = request.path
        api, files = f"/api/datasets/{self.repo_id}/", f"/datasets/{self.repo_id}/resolve/"
        if path == api.rstrip("/") or path.startswith(api + "revision/"):
            siblings = [{"rfilename": p.relative_to(self.folder).as_posix()} for p in self.folder.rglob("*")
                        if p.is_file()]
            return web.json_response({"_id": "1", "id": self.repo_id, "sha": COMMIT, "private": False,
                                      "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                                      "lastModified": "2024-01-01T00:00:00.000Z", "siblings": siblings,
                                      "cardData": {}})
        if path.startswith(api + "tree/"):
            rel = path[len(api + "tree/"):].partition("/")[2]
            folder = self._resolve(rel)
            if folder is None or not folder.is_dir():
                return web.json_response({"error": f"{rel} not found"}, status=404,
                                         headers={"X-Error-Code": "EntryNotFound"})
            items = sorted(folder.rglob("*") if request.query.get("recursive") in ("1", "true", "True")
                           else folder.iterdir())
            return web.json_response([self._entry(p) for p in items])
        if path.startswith(api + "paths-info/"):
            form = await request.post()
            wanted = form.getall("paths", [])
            found = [self._resolve(p) for p in wanted]
            return web.json_response([self._entry(p) for p in found if p is not None])
        if path.startswith(files):
            rel = path[len(files):].partition("/")[2]
            file = self._resolve(rel)
            if file is None or not file.is_file():
                return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
            etag = hashlib.sha1(file.read_bytes()).hexdigest()
            return web.FileResponse(file, headers={"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT,
                                                   "Accept-Ranges": "bytes"})
        if path == "/api/agent-harnesses":  # huggingface_hub 2.x's user-agent registry: an empty one
            return web.json_response({"standardEnvVars": [], "harnesses": {}})
        self.unknown.append(f"{request.method} {request.path_qs}")
        return web.Response(status=404, text="not a route of this double")

    # --- serving --------------------------------------------------------------------------------------------
    def start(self) -> str:
        ready = threading.Event()
        port: list[int] = []

        async def serve():
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._route)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port.append(site._server.sockets[0].getsockname()[1])
            ready.set()

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True, name="hub-double").start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop)
        assert ready.wait(30), "the Hub double did not start"
        return f"http://127.0.0.1:{port[0]}"

    def stop(self) -> None:
        if self._loop and self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)

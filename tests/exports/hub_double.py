"""A loopback stand-in for the Hub endpoints `HfApi.create_repo` + `upload_folder` call: repo
create, README metadata validation, preupload, NDJSON commit with base64 "regular" files. It keeps
what was committed and every request's Authorization header, so tests see what a real push sends."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubDouble:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo id → {"type", "private"}
        self.commits: list[dict] = []  # {"repo", "revision", "summary", "files": {path: bytes}}
        self.auth: list[str | None] = []
        self.unhandled: list[str] = []
        self.validated_cards: list[str] = []  # README.md texts sent to /api/validate-yaml
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                double.auth.append(self.headers.get("Authorization"))
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    repo = f"{req['organization']}/{req['name']}"
                    double.repos[repo] = {"type": req.get("type"), "private": req.get("visibility") == "private"}
                    return self._reply(200, {"url": f"{double.url}/datasets/{repo}"})
                if path == "/api/validate-yaml":  # the client checks a README's metadata before committing
                    double.validated_cards.append(json.loads(body)["content"])
                    return self._reply(200, {"warnings": [], "errors": []})
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/([^/]+)", path):
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                             for f in json.loads(body)["files"]]
                    return self._reply(200, {"files": files})
                if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/([^/]+)", path):
                    lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                    files = {x["value"]["path"]: base64.b64decode(x["value"]["content"])
                             for x in lines if x["key"] == "file"}
                    oid = hashlib.sha1(body).hexdigest()
                    double.commits.append({"repo": m.group(1), "revision": m.group(2), "files": files,
                                           "summary": lines[0]["value"]["summary"]})
                    return self._reply(200, {"commitUrl": f"{double.url}/datasets/{m.group(1)}/commit/{oid}",
                                             "commitOid": oid, "pullRequestUrl": None})
                double.unhandled.append(f"POST {self.path}")
                return self._reply(404, {"error": "not in the double"})

            def do_GET(self):
                double.unhandled.append(f"GET {self.path}")
                self._reply(404, {"error": "not in the double"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubDouble:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

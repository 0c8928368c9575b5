"""A TCP proxy on 127.0.0.1 in front of moto's S3 that stops for good in the middle of a run.

It forwards bytes both ways. Once it has relayed the responses to `stop_after` requests whose first
line matches `pattern`, it closes its listening socket and every connection: requests in flight are
cut, later connections are refused, as with a store that went away.
"""

from __future__ import annotations

import re
import socket
import threading


class StoppingProxy:
    def __init__(self, upstream_port: int, pattern: bytes, stop_after: int):
        self.upstream_port, self.pattern, self.stop_after = upstream_port, re.compile(pattern), stop_after
        self.answered = 0  # matching requests whose response went back to the client
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:  # stopped
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                if self.stopped.is_set():
                    client.close(), upstream.close()
                    return
                self._conns += [client, upstream]
            pending = threading.Event()  # a matching request on this connection awaits its response
            threading.Thread(target=self._requests, args=(client, upstream, pending), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, pending), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket, pending: threading.Event) -> None:
        def watch(data: bytes) -> None:
            if self.pattern.match(data):  # botocore sends a request's line and headers in one write
                pending.set()
        self._pipe(src, dst, watch)

    def _responses(self, src: socket.socket, dst: socket.socket, pending: threading.Event) -> None:
        def relayed(data: bytes) -> None:
            # moto's answer to a PUT is a few headers in one chunk; "100 Continue" only lets the body come
            if pending.is_set() and not data.startswith(b"HTTP/1.1 100 "):
                pending.clear()
                with self._lock:
                    self.answered += 1
                    done = self.answered >= self.stop_after
                if done:
                    self.stop()
        self._pipe(src, dst, after=relayed)

    def _pipe(self, src: socket.socket, dst: socket.socket, before=None, after=None) -> None:
        try:
            while data := src.recv(1 << 16):
                if before:
                    before(data)
                dst.sendall(data)
                if after:
                    after(data)
        except OSError:
            pass
        finally:
            src.close(), dst.close()

    def stop(self) -> None:
        with self._lock:
            self.stopped.set()
            conns, self._conns = self._conns, []
        for s in [self._server, *conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes the accept() and recv() calls blocked on it
            except OSError:
                pass
            s.close()

"""A small HTTP proxy on 127.0.0.1 in front of the moto S3 server that answers chosen requests with an error
(500/503) instead of forwarding them, and records every request it sees. boto3 talks to it as to any endpoint.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}


class FaultyProxy:
    """`fail(method, path, n)` decides for each request (n: how many earlier requests had the same method)
    whether to answer `status` instead of forwarding. `requests` lists (method, path, status answered)."""

    def __init__(self, upstream: str, fail: Callable[[str, str, int], bool], status: int = 503,
                 code: str = "ServiceUnavailable"):
        self.upstream = urlsplit(upstream)
        self.fail = fail
        self.status = status
        self.code = code  # S3's error code: SlowDown (503) is retried as throttling, with longer backoff
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    n = sum(1 for m, _, _ in proxy.requests if m == self.command)
                    failing = proxy.fail(self.command, self.path, n)
                    proxy.requests.append((self.command, self.path, proxy.status if failing else 0))
                if failing:
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{proxy.code}</Code>'
                               f"<Message>injected by the test proxy</Message></Error>").encode()
                    self.send_response(proxy.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                length_header = resp.getheader("Content-Length")
                self.send_header("Content-Length", length_header if self.command == "HEAD" and length_header
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, method: str, failed: bool | None = None) -> int:
        with self._lock:
            return sum(1 for m, _, s in self.requests
                       if m == method and (failed is None or bool(s) == failed))

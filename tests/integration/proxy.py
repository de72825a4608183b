"""A loopback HTTP proxy in front of an OpenAI-compatible server, which can answer requests
with errors: how the tests make a real server fail on cue."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


class FlakyProxy:
    """Forwards POSTs to `upstream_port`, streaming the answer back as it comes; the next
    `fail_next` requests get HTTP `fail_status` instead."""

    def __init__(self, upstream_port: int, fail_status: int = 500) -> None:
        self.upstream_port = upstream_port
        self.fail_status = fail_status
        self.fail_next = 0
        self.requests: list[tuple[str, dict[str, Any]]] = []  # path and JSON body of each
        self.failed = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> FlakyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, count: int) -> None:
        with self._lock:
            self.fail_next = count

    def _should_fail(self, path: str, body: bytes) -> bool:
        with self._lock:
            self.requests.append((path, json.loads(body)))
            if self.fail_next <= 0:
                return False
            self.fail_next -= 1
            self.failed += 1
            return True

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the answer ends when the connection closes

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if proxy._should_fail(self.path, body):
                    self._answer(proxy.fail_status, b'{"error": {"message": "injected"}}')
                    return
                upstream = http.client.HTTPConnection(HOST, proxy.upstream_port, timeout=120)
                try:
                    upstream.request("POST", self.path, body, dict(self.headers.items()))
                    resp = upstream.getresponse()
                    self.send_response(resp.status)
                    self.send_header("Content-Type", resp.getheader("Content-Type", ""))
                    self.end_headers()
                    while chunk := resp.read1(65536):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker closed its stream early: a window or job ended
                finally:
                    upstream.close()

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test output is for the tests

        return Handler

"""Headless Chromium driven over the DevTools protocol, for tests that script a page (type,
submit, reload) rather than only dump its DOM.

The protocol runs over a pipe (`--remote-debugging-pipe`: Chromium reads commands on its fd 3
and writes replies and events on its fd 4, each message JSON ended by a NUL byte), so no
websocket client is needed. One tab, attached in flat mode: every page command carries the
tab's session id.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPLY_TIMEOUT_S = 30.0
POLL_S = 0.05
# bash gives Chromium the two pipe ends as its fds 3 and 4, where it looks for them; they are
# first moved above 4, so that neither is overwritten by the other's move (and bash, unlike
# dash, takes any fd number there).
ON_FDS_3_AND_4 = 'exec "$@" 3<&"$CDP_IN" 4>&"$CDP_OUT"'
ABOVE_4 = 10


class BrowserError(RuntimeError):
    """The browser answered a command with an error, or not within the time allowed."""


class Tab:
    """One tab of a headless Chromium: commands, JavaScript evaluated in the page, waits."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc, self.to_browser, self.from_browser = proc, to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.session: str | None = None

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command (to the tab once attached) and return its result."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while True:
            reply = self._message(deadline)
            if reply.get("id") != self.next_id:
                continue  # an event, or a reply to no command of ours
            if "error" in reply:
                raise BrowserError(f"{method}: {reply['error'].get('message')}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    def open(self, url: str) -> None:
        target = self.command("Target.createTarget", url=url)["targetId"]
        self.session = self.command("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def evaluate(self, expression: str) -> Any:
        """The expression's value in the page (a promise awaited); BrowserError if it threw."""
        result = self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float) -> Any:
        """Evaluate until the value is truthy and return it. A page that is (re)loading has no
        context to evaluate in for a moment: that counts as not yet."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except BrowserError as exc:
                last = exc
            if last and not isinstance(last, BrowserError):
                return last
            time.sleep(POLL_S)
        raise BrowserError(f"timed out after {timeout_s:.0f}s waiting for {expression} ({last})")

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self.from_browser], [], [], max(left, 0.0))
            if not readable:
                raise BrowserError(f"no reply from Chromium within {REPLY_TIMEOUT_S:.0f}s")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(f"Chromium exited ({self.proc.poll()})")
            self.buffer += chunk
        raw, _, self.buffer = self.buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message


def chromium_binary() -> str | None:
    return shutil.which("chromium")


@contextmanager
def headless_tab(url: str) -> Iterator[Tab]:
    """A tab showing `url` in a headless Chromium of its own (root in a container: no sandbox,
    no /dev/shm; a throwaway profile); Chromium is stopped on the way out."""
    binary = chromium_binary()
    assert binary is not None
    commands_r, commands_w = _high(os.pipe())
    replies_r, replies_w = _high(os.pipe())
    with tempfile.TemporaryDirectory(prefix="genq-chromium-") as profile:
        argv = [
            *(binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"),
            *(f"--user-data-dir={Path(profile)}", "--remote-debugging-pipe", "about:blank"),
        ]
        proc = subprocess.Popen(
            ["bash", "-c", ON_FDS_3_AND_4, "bash", *argv],
            env={**os.environ, "CDP_IN": str(commands_r), "CDP_OUT": str(replies_w)},
            pass_fds=(commands_r, replies_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_r)
        os.close(replies_w)
        try:
            tab = Tab(proc, commands_w, replies_r)
            tab.open(url)
            yield tab
        finally:
            os.close(commands_w)  # Chromium exits when its command pipe closes
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(replies_r)


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """The pipe's two ends on fds above 4 (the originals closed)."""
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, ABOVE_4) for fd in fds)
    for fd in fds:
        os.close(fd)
    return moved[0], moved[1]

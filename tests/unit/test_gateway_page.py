"""The gateway's page (producer/gateway/page.py), read without a browser: its inline script and
style are the ones its Content-Security-Policy lets run, it loads nothing from elsewhere, and its
script speaks the Responses API in background mode. (tests/realmodel/test_page.py runs it in
headless Chromium.)"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from genq.producer.gateway.page import HEADERS, PAGE, SCRIPT


def csp_hashes(directive: str) -> set[str]:
    policy = dict(
        part.strip().split(" ", 1) for part in HEADERS["Content-Security-Policy"].split(";")
    )
    return set(re.findall(r"'sha256-([^']+)'", policy[directive]))


def sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_the_policy_lets_exactly_the_inline_script_and_style_run() -> None:
    (script,) = re.findall(r"<script>(.*?)</script>", PAGE, re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", PAGE, re.DOTALL)
    assert csp_hashes("script-src") == {sha256(script)}
    assert csp_hashes("style-src") == {sha256(style)}


def test_the_page_loads_nothing_from_elsewhere_and_talks_only_to_its_origin() -> None:
    assert not re.search(r"\b(src|href)\s*=", PAGE)
    assert "default-src 'none'" in HEADERS["Content-Security-Policy"]
    assert "connect-src 'self'" in HEADERS["Content-Security-Policy"]


def test_streamed_text_is_set_as_text_never_as_html() -> None:
    assert "innerHTML" not in PAGE and "insertAdjacentHTML" not in PAGE
    assert "document.write" not in PAGE


def test_the_script_creates_a_background_stream_and_reattaches_after_its_last_event() -> None:
    # Created in the background and streamed; reattached after the event kept; stopped by
    # the Responses API's cancel. Today's chat and job routes are not called any more.
    assert 'fetch("/v1/responses", {' in SCRIPT and 'method: "POST"' in SCRIPT
    assert "{model, input: prompt, stream: true, background: true}" in SCRIPT
    assert '"/v1/responses/" + encodeURIComponent(state.response)' in SCRIPT
    assert '"?stream=true"' in SCRIPT and '"&starting_after=" + state.seq' in SCRIPT
    assert 'url("/cancel")' in SCRIPT
    assert "state.seq = event.sequence_number" in SCRIPT
    assert "/v1/chat/completions" not in SCRIPT and "/v1/jobs/" not in SCRIPT
    assert "Last-Event-ID" not in SCRIPT


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to parse the script with")
def test_the_script_parses_as_javascript(tmp_path: Path) -> None:
    script = tmp_path / "page.js"
    script.write_text(SCRIPT, encoding="utf-8")
    checked = subprocess.run(
        ["node", "--check", str(script)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr

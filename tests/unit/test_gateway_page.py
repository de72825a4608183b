"""The gateway's page (producer/gateway/page.py), read without a browser: its inline script and
style are the ones its Content-Security-Policy lets run, and it loads nothing from elsewhere.
(tests/realmodel/test_page.py runs it in headless Chromium.)"""

from __future__ import annotations

import base64
import hashlib
import re

from genq.producer.gateway.page import HEADERS, PAGE


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

"""The gateway's page (GET /) in headless Chromium, scripted over the DevTools protocol: a
prompt typed and sent streams its tokens (a background response, POST /v1/responses), and a
reload mid-stream reattaches after the last event it kept (`starting_after`), so that the page
ends with the response's `output_text`, with no gap and no repeat.

On gemma-3-270m, whose few dozen tokens a second leave the time to reload mid-stream that the
tiny model (thousands a second) would not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from genq.common import gemma
from ops.localstack import Gateway, Worker
from tests.browser import Tab, chromium_binary, headless_tab
from tests.integration.gateway_support import sdk

PROMPT = "Write a short story about a lighthouse keeper."
MAX_TOKENS = 96  # a few seconds on two cores: the reload comes after the first few tokens
SHOWN_BEFORE_RELOAD = 8  # characters of the answer on the page when it is reloaded
OUT = "document.getElementById('out').textContent"
STATE = "document.body.dataset"
# What the page keeps for a reload (sessionStorage "genq.response"): the text up to the
# sequence_number of the last event it read.
KEPT = "JSON.parse(sessionStorage.getItem('genq.response') || '{}')"


@pytest.fixture(scope="module")
def gateway(
    genq_env: dict[str, str], gemma_worker: Worker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """`genq serve` on the session's stack (no keys: loopback only)."""
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    proc = Gateway(env=genq_env, log=log).start()
    yield proc
    proc.stop()


def send(tab: Tab, prompt: str, model: str, max_tokens: int) -> None:
    """Types the prompt, picks the model, the tokens and greedy sampling (the answer is then
    the same every time: long enough to reload in the middle), and presses Send."""
    tab.wait_for(f"{STATE}.state === 'idle' && document.getElementById('model').length > 0", 30)
    fill = {"prompt": prompt, "model": model, "max": str(max_tokens), "temperature": "0"}
    tab.evaluate(
        f"Object.entries({json.dumps(fill)}).forEach(([id, value]) => "
        "document.getElementById(id).value = value); document.getElementById('send').click()"
    )


def wait_for_page(tab: Tab, condition: str, timeout_s: float) -> Any:
    """`condition`'s value once truthy; fails at once, with the page's message, if the page
    shows an error."""
    value = tab.wait_for(
        f"{STATE}.state === 'error' ? {{error: document.getElementById('status').textContent}}"
        f" : ({condition})",
        timeout_s,
    )
    assert not (isinstance(value, dict) and "error" in value), value
    return value


def page_view(tab: Tab) -> dict[str, Any]:
    view: dict[str, Any] = tab.evaluate(
        f"({{text: {OUT}, response: document.getElementById('response').textContent, "
        f"resumedFrom: {STATE}.resumedFrom, resumedAt: {STATE}.resumedAt}})"
    )
    return view


@pytest.mark.skipif(
    chromium_binary() is None,
    reason="no chromium binary (Debian: apt-get install chromium; CI installs it)",
)
def test_the_page_picks_the_stream_up_after_a_reload_with_no_gap_and_no_repeat(
    gateway: Gateway,
) -> None:
    with headless_tab(gateway.url + "/") as tab:
        send(tab, PROMPT, gemma.NAME, MAX_TOKENS)
        # Some text shown, and an event's number kept: a reload now reattaches after it.
        shown = f"{OUT}.length >= {SHOWN_BEFORE_RELOAD} && {KEPT}.seq != null && {OUT}"
        before: str = wait_for_page(tab, shown, 60)
        tab.command("Page.reload")
        wait_for_page(tab, f"{STATE}.resumedAt !== undefined", 30)  # the reloaded page resumes
        wait_for_page(tab, f"{STATE}.state === 'done'", 120)
        view = page_view(tab)
    with sdk(gateway) as openai_client:
        result = openai_client.responses.retrieve(view["response"])
    assert result.status in {"completed", "incomplete"}  # ended (incomplete: its length)
    assert view["text"] == result.output_text  # no gap, no repeat
    assert view["text"].startswith(before)
    # The reload came mid-stream: the page reattached after an event it had kept, and more of
    # the answer arrived after it.
    assert int(view["resumedFrom"]) > 0
    assert 0 < int(view["resumedAt"]) < len(result.output_text)

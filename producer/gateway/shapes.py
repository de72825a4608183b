"""OpenAI's response objects of a finished job: `text_completion` (/v1/completions) and
`chat.completion` (/v1/chat/completions), with ids `cmpl-<job id>` / `chatcmpl-<job id>`.
(completions.py builds the same for non-streaming requests; one copy is to stay.)"""

from __future__ import annotations

from typing import Any

from common.schemas import JobResult

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def usage(result: JobResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
        "total_tokens": result.usage.total_tokens,
    }


def chat_completion(result: JobResult, created_s: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": result.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": str(result.finish_reason),
    }
    return {
        "id": f"chatcmpl-{result.job_id}",
        "object": "chat.completion",
        "created": created_s,
        "model": result.model,
        "choices": [choice],
        "usage": usage(result),
    }


def text_completion(result: JobResult, created_s: int) -> dict[str, Any]:
    choice = {
        "index": 0,
        "text": result.text,
        "logprobs": None,
        "finish_reason": str(result.finish_reason),
    }
    return {
        "id": f"cmpl-{result.job_id}",
        "object": "text_completion",
        "created": created_s,
        "model": result.model,
        "choices": [choice],
        "usage": usage(result),
    }


def completion(endpoint: str, result: JobResult, created_s: int) -> dict[str, Any]:
    """The response body `endpoint` answers with for `result`."""
    if endpoint == CHAT:
        return chat_completion(result, created_s)
    return text_completion(result, created_s)

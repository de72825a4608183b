"""Reading a batch: JSONL lines, each a genq job or an OpenAI batch request, checked one by
one so that every bad line is reported with its number and reason.

A genq line is a job's fields plus a `custom_id`:

    {"custom_id": "q1", "prompt": "Once upon a time", "max_tokens": 64}

An OpenAI line is what OpenAI's Batch API (and vLLM's `run-batch`) accept:

    {"custom_id": "q2", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}}
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

from genq.common.errors import InvalidBatch, InvalidJob
from genq.common.schemas import JobSpec, json_kind, unencodable
from genq.producer.core import parse_spec

CUSTOM_ID_MAX = 256  # characters
# Limits checked before a line is parsed, so that no line can exhaust memory or recursion.
# A line's bytes, its newline included: room for a prompt of a million characters (the default
# GENQ_MAX_PROMPT_CHARS) even written wholly as \uXXXX escapes.
LINE_BYTES_MAX = 16 * 2**20
JSON_DEPTH_MAX = 32  # arrays and objects nested in a line; a job needs 5 at most
SHOWN_CHARS_MAX = 1_000  # of a line over LINE_BYTES_MAX, in its reject's `input`
_SKIP_BYTES = 2**20  # read at a time while skipping the rest of an overlong line
OPENAI_URLS = {"/v1/completions": "prompt", "/v1/chat/completions": "messages"}
# OpenAI body fields genq honours, by genq's name for them.
_OPENAI_FIELDS = {
    "model": "model",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    # llama.cpp server's extensions
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "ignore_eos": "ignore_eos",  # llama.cpp's and vLLM's servers
}
# Fields with their own mapping below.
_OPENAI_SPECIAL = {"prompt", "messages", "stop", "logit_bias", "logprobs", "top_logprobs"}
# Fields that do not change what is generated, accepted and ignored.
_OPENAI_IGNORED = {"stream", "stream_options", "user", "metadata", "store", "service_tier"}
# Fields accepted only at the values that ask for nothing genq lacks (or null).
_OPENAI_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "echo": (False,),
    "suffix": (),
}

Source = str | Path | Iterable[str | bytes | Mapping[str, Any]]


class LineError(InvalidJob):
    """One line's reason for being rejected."""


@dataclass(frozen=True)
class Reject:
    line: int
    reason: str
    raw: str
    custom_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "line": self.line,
                "custom_id": self.custom_id,
                "error": self.reason,
                "input": self.raw,
            }
        )


@dataclass(frozen=True)
class BatchLine:
    line: int
    custom_id: str
    spec: JobSpec


def raw_lines(source: Source) -> Iterator[tuple[int, str | bytes | Mapping[str, Any]]]:
    """(line number, line) for every non-blank line; a path is read lazily, as bytes. Raises
    InvalidBatch for a path that is not a regular file that can be read."""
    if isinstance(source, str | Path):
        with open_batch_file(Path(source)) as file:
            for number, raw in enumerate(_bounded_lines(file), 1):
                if raw.strip():
                    yield number, raw
        return
    for number, item in enumerate(source, 1):
        if isinstance(item, Mapping) or item.strip():
            yield number, item


_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}


def open_batch_file(path: Path) -> IO[bytes]:
    """The file, opened for reading, if it is a regular file. Special files are refused: a
    device like /dev/zero never ends, and a FIFO's lines could not be read twice."""
    try:  # non-blocking: opening a FIFO would otherwise wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise InvalidBatch(f"{path}: cannot be read ({exc.strerror})", []) from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        what = _FILE_KINDS.get(kind, "not a regular file")
        raise InvalidBatch(f"{path}: {what}, not a regular file; a batch is a JSONL file", [])
    return os.fdopen(fd, "rb")


def _bounded_lines(file: IO[bytes]) -> Iterator[bytes]:
    """The file's lines, each of at most LINE_BYTES_MAX + 1 bytes: a longer line is cut there
    (which `_object` refuses) and the rest of it skipped, so memory stays bounded."""
    while raw := file.readline(LINE_BYTES_MAX + 1):
        if len(raw) > LINE_BYTES_MAX and not raw.endswith(b"\n"):
            while (rest := file.readline(_SKIP_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield raw


def parse_line(raw: str | bytes | Mapping[str, Any], defaults: Mapping[str, Any]) -> BatchLine:
    """One line as a job; raises LineError with the reason. `line` is left 0."""
    obj = _object(raw)
    return _job(obj, _custom_id(obj), defaults)


def _job(obj: Mapping[str, Any], custom_id: str, defaults: Mapping[str, Any]) -> BatchLine:
    _check_values(obj)
    form = _openai_fields if {"url", "body", "method"} & obj.keys() else _genq_fields
    fields = {**defaults, **form(obj)}
    try:
        spec = parse_spec(None, fields)
    except InvalidJob as exc:
        raise LineError(str(exc).removeprefix("invalid job: ")) from None
    return BatchLine(0, custom_id, spec)


def _object(raw: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    text = _text(raw)
    _check_depth(text)
    try:
        obj = json.loads(text.removeprefix("\ufeff"), parse_constant=_not_json)  # BOM: some files
    except json.JSONDecodeError as exc:
        raise LineError(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # NaN, Infinity, or an integer of more digits than Python reads
        raise LineError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LineError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _text(raw: str | bytes) -> str:
    """A line as text, refused when longer than LINE_BYTES_MAX or when not UTF-8 text."""
    size = len(raw) if isinstance(raw, bytes) else _utf8_size(raw)
    if size > LINE_BYTES_MAX:
        raise LineError(
            f"line longer than {LINE_BYTES_MAX:,} bytes ({LINE_BYTES_MAX // 2**20} MiB), "
            "the limit on a line"
        )
    if isinstance(raw, str):
        return raw
    if b"\x00" in raw:
        raise LineError("not text: it holds NUL bytes (is this a binary file?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8 text (byte {exc.start}; is this a binary file?)") from None


def _utf8_size(text: str) -> int:
    if len(text) * 4 <= LINE_BYTES_MAX:  # 4 bytes a character at most: no need to count
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')  # once escapes are gone
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_PAIR = re.compile(r"\[\]|\{\}")


def _check_depth(text: str) -> None:
    """Refuse a line nested deeper than JSON_DEPTH_MAX before `json` recurses into it. Each
    round removes the innermost bracket pairs outside strings: as many rounds as the depth."""
    if text.count("[") + text.count("{") <= JSON_DEPTH_MAX:
        return
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    rounds = 0
    while brackets and rounds <= JSON_DEPTH_MAX:
        inner = _PAIR.sub("", brackets)
        if inner == brackets:  # unbalanced (not JSON): its openers may still nest
            break
        brackets, rounds = inner, rounds + 1
    if rounds + brackets.count("[") + brackets.count("{") > JSON_DEPTH_MAX:
        raise _too_deep()


def _too_deep() -> LineError:
    return LineError(f"nested deeper than {JSON_DEPTH_MAX} levels (arrays and objects)")


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON value (JSON numbers are finite)")


def _check_values(obj: Mapping[str, Any]) -> None:
    """Every string of a line, field names too, must encode as UTF-8 (Redis, JSON and the
    model take nothing else), and a line given as a mapping must nest no deeper than a JSON
    line may. Reports the first string that fails, by where it is."""
    todo: list[tuple[str, Any, int]] = [("", obj, 1)]
    while todo:
        where, value, depth = todo.pop()
        if isinstance(value, str):
            reason = unencodable(value)
            if reason:
                raise LineError(f"{where}: {reason}")
            continue
        if not isinstance(value, Mapping | list | tuple):
            continue
        if depth > JSON_DEPTH_MAX:
            raise _too_deep()
        items = list(value.items() if isinstance(value, Mapping) else enumerate(value))
        for key, item in reversed(items):
            name = f"{where}.{key}" if where else str(key)
            reason = unencodable(key) if isinstance(key, str) else None
            if reason:
                raise LineError(f"a field name in {where or 'the line'} {reason}")
            todo.append((name, item, depth + 1))


def _custom_id(obj: Mapping[str, Any]) -> str:
    custom_id = obj.get("custom_id")
    if custom_id is None:
        raise LineError("custom_id: missing (every line needs a unique, non-empty string)")
    if not isinstance(custom_id, str):
        raise LineError(f"custom_id: must be a string, got {json_kind(custom_id)}")
    if not custom_id:
        raise LineError("custom_id: empty (every line needs a unique, non-empty string)")
    if len(custom_id) > CUSTOM_ID_MAX:
        raise LineError(f"custom_id: longer than {CUSTOM_ID_MAX} characters")
    reason = unencodable(custom_id)
    if reason:
        raise LineError(f"custom_id: {reason}")
    return custom_id


def _genq_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in obj.items() if name != "custom_id"}


def _openai_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    extra = obj.keys() - {"custom_id", "method", "url", "body"}
    if extra:
        raise LineError(
            f"unexpected field(s) in an OpenAI request line: {', '.join(sorted(extra))}"
        )
    if obj.get("method", "POST") != "POST":
        raise LineError(f"method: only POST is supported, got {obj.get('method')!r}")
    url = obj.get("url")
    if url not in OPENAI_URLS:
        raise LineError(f"url: must be one of {', '.join(OPENAI_URLS)}, got {url!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise LineError("body: must be a JSON object")
    return _openai_body(body, OPENAI_URLS[url])


def _openai_body(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if value is None:  # OpenAI's null: the default
            continue
        if name in _OPENAI_FIELDS:
            fields[_OPENAI_FIELDS[name]] = value
        elif name in _OPENAI_NEUTRAL:
            _check_neutral(name, value)
        elif name not in _OPENAI_IGNORED | _OPENAI_SPECIAL:
            raise LineError(f"body.{name}: not supported by genq")
    other = "messages" if kind == "prompt" else "prompt"
    if other in body:
        raise LineError(f"body.{other}: not allowed for this url (use {kind})")
    if kind == "prompt":
        fields["prompt"] = _openai_prompt(body.get("prompt"))
    else:
        fields["messages"] = _openai_messages(body.get("messages"))
    return {**fields, **_openai_special(body, kind)}


def _openai_special(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if body.get("stop") is not None:
        stop = body["stop"]
        fields["stop"] = [stop] if isinstance(stop, str) else stop
    if body.get("logit_bias") is not None:
        fields["logit_bias"] = _openai_logit_bias(body["logit_bias"])
    logprobs = _openai_logprobs(body, kind)
    if logprobs is not None:
        fields["logprobs"] = logprobs
    return fields


def _openai_logprobs(body: Mapping[str, Any], kind: str) -> Any:
    """/v1/completions asks with `logprobs: N`; /v1/chat/completions with `logprobs: true`
    and `top_logprobs: N`. genq's `logprobs` is N (0: the token's own only)."""
    logprobs, top = body.get("logprobs"), body.get("top_logprobs")
    if kind == "prompt":
        if top is not None:
            raise LineError("body.top_logprobs: for /v1/chat/completions; use body.logprobs")
        return None if logprobs is False else logprobs
    if logprobs is not None and not isinstance(logprobs, bool):
        raise LineError("body.logprobs: must be true or false for /v1/chat/completions")
    if top is not None and not logprobs:
        raise LineError("body.top_logprobs: needs body.logprobs set to true")
    return (top if top is not None else 0) if logprobs else None


def _check_neutral(name: str, value: Any) -> None:
    allowed = _OPENAI_NEUTRAL[name]
    if not any(value == a and type(value) is type(a) for a in allowed):
        shown = " or ".join(json.dumps(a) for a in (*allowed, None))
        raise LineError(f"body.{name}: genq supports only {shown}")


def _openai_prompt(prompt: Any) -> Any:
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise LineError("body.prompt: a list must hold exactly one prompt (one job a line)")
        return prompt[0]
    return prompt


def _openai_messages(messages: Any) -> Any:
    if not isinstance(messages, list):
        return messages  # the job's own validation says what is wrong
    return [_openai_message(m) for m in messages]


def _openai_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    role = "system" if message.get("role") == "developer" else message.get("role")
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only
        if any(not isinstance(p, dict) or p.get("type") != "text" for p in content):
            raise LineError("body.messages: only text content parts are supported")
        if any(not isinstance(p.get("text"), str) for p in content):
            raise LineError("body.messages: a text content part's `text` must be a string")
        content = "".join(p["text"] for p in content)
    return {"role": role, "content": content}


def _openai_logit_bias(bias: Any) -> Any:
    if not isinstance(bias, dict):
        return bias
    if any(isinstance(t, str) and not (t.isascii() and t.isdigit()) for t in bias):
        raise LineError("body.logit_bias: keys must be token ids")
    return bias  # the job's own validation reads the ids


@dataclass
class Scan:
    """What a first pass over a batch found: how many jobs are good, and every bad line."""

    valid: int = 0
    rejects: list[Reject] = field(default_factory=list)

    @property
    def rejected_lines(self) -> set[int]:
        return {r.line for r in self.rejects}


def scan(source: Source, defaults: Mapping[str, Any], check: Callable[[JobSpec], None]) -> Scan:
    """Check every line (form, fields, model, prompt size, unique custom_id) keeping only the
    custom ids, so a file of any length is checked in bounded memory."""
    result = Scan()
    first_line: dict[str, int] = {}  # every readable custom_id, valid line or not
    for number, raw in raw_lines(source):
        custom_id = None
        try:
            obj = _object(raw)
            custom_id = _custom_id(obj)
            first = first_line.setdefault(custom_id, number)
            if first != number:
                raise LineError(f"duplicate custom_id {custom_id!r} (first on line {first})")
            check(_job(obj, custom_id, defaults).spec)
        except InvalidJob as exc:
            result.rejects.append(Reject(number, str(exc), _shown(raw), custom_id))
            continue
        result.valid += 1
    return result


def valid_lines(source: Source, defaults: Mapping[str, Any], skip: set[int]) -> Iterator[BatchLine]:
    """The second pass: the lines `scan` accepted, parsed again."""
    for number, raw in raw_lines(source):
        if number not in skip:
            line = parse_line(raw, defaults)
            yield BatchLine(number, line.custom_id, line.spec)


def _shown(raw: str | bytes | Mapping[str, Any]) -> str:
    if isinstance(raw, Mapping):
        try:
            return json.dumps(raw, default=str)
        except (ValueError, RecursionError):  # nested past what `json` writes
            return "(a mapping too deeply nested to show)"
    if len(raw) > LINE_BYTES_MAX:  # kept short: rejects are held in memory
        raw = raw[:SHOWN_CHARS_MAX]
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.rstrip("\r\n")

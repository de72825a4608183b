"""genq.producer.batchfile: JSONL batch lines in genq's form or OpenAI's, every bad line reported
with its number and reason."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genq.common.errors import InvalidBatch, UnknownModel
from genq.common.schemas import ChatMessage, JobSpec
from genq.producer.batchfile import (
    JSON_DEPTH_MAX,
    LINE_BYTES_MAX,
    SHOWN_CHARS_MAX,
    BatchLine,
    LineError,
    Reject,
    parse_line,
    raw_lines,
    scan,
    valid_lines,
)

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"


def line(**fields: Any) -> str:
    """A genq line."""
    return json.dumps(fields)


def openai(body: Any, url: str = COMPLETIONS, custom_id: str = "q", **extra: Any) -> str:
    """An OpenAI batch request line."""
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra})


def reason(raw: str | bytes | dict[str, Any], defaults: dict[str, Any] | None = None) -> str:
    """Why parse_line rejects the line."""
    with pytest.raises(LineError) as caught:
        parse_line(raw, defaults or {})
    return str(caught.value)


def accept_all(spec: JobSpec) -> None:
    """A `check` that finds nothing wrong."""


def no_model_x(spec: JobSpec) -> None:
    if spec.model == "x":
        raise UnknownModel("unknown model 'x'")


# The genq form.


def test_genq_line_parses_to_its_custom_id_and_job_spec() -> None:
    parsed = parse_line(line(custom_id="q1", prompt="Once upon", max_tokens=64), {})
    assert parsed == BatchLine(0, "q1", JobSpec(prompt="Once upon", max_tokens=64))


def test_genq_line_takes_the_defaults_for_the_fields_it_leaves_out() -> None:
    defaults = {"max_tokens": 16, "temperature": 0.0, "stop": ["\n"]}
    spec = parse_line(line(custom_id="q1", prompt="p", max_tokens=4), defaults).spec
    assert (spec.max_tokens, spec.temperature, spec.stop) == (4, 0.0, ["\n"])


def test_genq_line_takes_a_chat_messages_input() -> None:
    spec = parse_line(line(custom_id="q1", messages=[{"role": "user", "content": "hi"}]), {}).spec
    assert spec.messages == [ChatMessage(role="user", content="hi")]
    assert spec.prompt is None


def test_line_given_as_bytes_or_a_mapping_parses_like_text() -> None:
    text = line(custom_id="q1", prompt="é", seed=3)
    expected = parse_line(text, {})
    assert parse_line(text.encode() + b"\n", {}) == expected
    assert parse_line(json.loads(text), {}) == expected


# The OpenAI form.


@pytest.mark.parametrize("prompt", ["Once upon", ["Once upon"]], ids=["string", "one-item-list"])
def test_openai_completions_line_takes_its_prompt(prompt: str | list[str]) -> None:
    parsed = parse_line(openai({"model": "tiny", "prompt": prompt, "max_tokens": 5}), {})
    assert parsed == BatchLine(0, "q", JobSpec(model="tiny", prompt="Once upon", max_tokens=5))


def test_openai_completions_prompt_list_of_two_prompts_is_rejected() -> None:
    assert "body.prompt: a list must hold exactly one prompt" in reason(
        openai({"prompt": ["a", "b"]})
    )


def test_openai_chat_line_joins_text_parts_and_maps_developer_to_system() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    body = {
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": parts},
        ]
    }
    spec = parse_line(openai(body, CHAT), {}).spec
    assert spec.messages == [
        ChatMessage(role="system", content="be brief"),
        ChatMessage(role="user", content="ab"),
    ]
    assert spec.prompt is None


def test_openai_chat_content_part_other_than_text_is_rejected() -> None:
    image = [{"type": "image_url", "image_url": {"url": "http://x"}}]
    body = {"messages": [{"role": "user", "content": image}]}
    assert "only text content parts" in reason(openai(body, CHAT))


def test_openai_body_fields_map_to_genq_fields() -> None:
    body = {
        "prompt": "p",
        "max_completion_tokens": 7,
        "temperature": 0.0,
        "top_p": 0.5,
        "seed": 11,
        "top_k": 3,
        "min_p": 0.2,
        "repeat_penalty": 1.1,
        "stop": "\n",
        "logit_bias": {"50256": -100, "7": 2.5},
    }
    spec = parse_line(openai(body), {}).spec
    assert spec == JobSpec(
        prompt="p",
        max_tokens=7,
        temperature=0.0,
        top_p=0.5,
        seed=11,
        top_k=3,
        min_p=0.2,
        repeat_penalty=1.1,
        stop=["\n"],
        logit_bias={50256: -100.0, 7: 2.5},
    )


def test_openai_stop_list_is_kept_as_is() -> None:
    assert parse_line(openai({"prompt": "p", "stop": ["a", "b"]}), {}).spec.stop == ["a", "b"]


def test_openai_logit_bias_key_that_is_not_a_token_id_is_rejected() -> None:
    assert "body.logit_bias: keys must be token ids" in reason(
        openai({"prompt": "p", "logit_bias": {"hello": 1}})
    )


def test_openai_line_takes_the_defaults_and_its_body_overrides_them() -> None:
    defaults = {"max_tokens": 16, "temperature": 0.0}
    spec = parse_line(openai({"prompt": "p", "max_tokens": 4}), defaults).spec
    assert (spec.max_tokens, spec.temperature) == (4, 0.0)


def test_openai_fields_that_do_not_change_the_output_are_accepted_and_ignored() -> None:
    body = {"prompt": "p", "stream": True, "user": "u1", "metadata": {"k": "v"}}
    assert parse_line(openai(body), {}).spec == JobSpec(prompt="p")


@pytest.mark.parametrize(
    "body",
    [{"n": 1}, {"n": None}, {"presence_penalty": 0}, {"frequency_penalty": 0.0}, {"echo": False}],
    ids=["n-1", "n-null", "presence-0", "frequency-0", "echo-false"],
)
def test_openai_fields_at_their_neutral_value_are_accepted(body: dict[str, Any]) -> None:
    assert parse_line(openai({"prompt": "p", **body}), {}).spec == JobSpec(prompt="p")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"n": 2}, "body.n: genq supports only 1"),
        ({"presence_penalty": 0.5}, "body.presence_penalty: genq supports only 0"),
        ({"best_of": 3}, "body.best_of: genq supports only 1"),
        ({"tools": []}, "body.tools: not supported by genq"),
    ],
    ids=["n-2", "presence-penalty", "best-of", "unknown-field"],
)
def test_openai_field_genq_cannot_honour_is_rejected_naming_it(
    body: dict[str, Any], named: str
) -> None:
    assert reason(openai({"prompt": "p", **body})).startswith(named)


def test_openai_line_with_another_url_is_rejected_listing_the_allowed_urls() -> None:
    why = reason(openai({"prompt": "p"}, "/v1/embeddings"))
    assert why.startswith("url: must be one of")
    assert COMPLETIONS in why
    assert CHAT in why
    assert "/v1/embeddings" in why


def test_openai_line_with_a_method_other_than_post_is_rejected() -> None:
    assert reason(openai({"prompt": "p"}, method="GET")) == (
        "method: only POST is supported, got 'GET'"
    )


def test_openai_line_without_a_method_is_taken_as_post() -> None:
    raw = json.dumps({"custom_id": "q", "url": COMPLETIONS, "body": {"prompt": "p"}})
    assert parse_line(raw, {}).spec == JobSpec(prompt="p")


@pytest.mark.parametrize(
    ("url", "body", "named"),
    [
        (COMPLETIONS, {"prompt": "p", "messages": [{"role": "user", "content": "hi"}]}, "messages"),
        (CHAT, {"messages": [{"role": "user", "content": "hi"}], "prompt": "p"}, "prompt"),
    ],
    ids=["messages-on-completions", "prompt-on-chat"],
)
def test_openai_input_of_the_other_url_is_rejected(
    url: str, body: dict[str, Any], named: str
) -> None:
    assert reason(openai(body, url)).startswith(f"body.{named}: not allowed for this url")


def test_openai_line_with_an_unexpected_top_level_field_is_rejected_naming_it() -> None:
    assert reason(openai({"prompt": "p"}, priority=3)) == (
        "unexpected field(s) in an OpenAI request line: priority"
    )


def test_openai_line_whose_body_is_not_an_object_is_rejected() -> None:
    assert reason(openai("p")) == "body: must be a JSON object"


# Rejected lines.


def test_line_that_is_not_json_is_rejected_as_invalid_json() -> None:
    assert reason('{"custom_id": "q1", "prompt": ').startswith("invalid JSON: ")


def test_line_that_is_a_json_array_is_rejected_as_not_an_object() -> None:
    assert reason('[{"custom_id": "q1"}]') == "expected a JSON object, got list"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (line(prompt="p"), "custom_id: missing"),
        (line(custom_id=None, prompt="p"), "custom_id: missing"),
        (line(custom_id="", prompt="p"), "custom_id: empty"),
    ],
    ids=["missing", "null", "empty"],
)
def test_line_without_a_custom_id_is_rejected(raw: str, why: str) -> None:
    assert reason(raw).startswith(why)


@pytest.mark.parametrize(
    ("custom_id", "kind"),
    [(1, "the number 1"), (True, "a boolean"), (["q"], "a list"), ({"q": 1}, "an object")],
    ids=["number", "boolean", "list", "object"],
)
def test_custom_id_of_another_type_is_rejected_saying_it_has_the_wrong_type(
    custom_id: Any, kind: str
) -> None:
    assert reason(line(custom_id=custom_id, prompt="p")) == (
        f"custom_id: must be a string, got {kind}"
    )


def test_custom_id_longer_than_256_characters_is_rejected() -> None:
    assert parse_line(line(custom_id="c" * 256, prompt="p"), {}).custom_id == "c" * 256
    assert "longer than 256" in reason(line(custom_id="c" * 257, prompt="p"))


def test_out_of_range_field_is_rejected_naming_it_without_the_invalid_job_prefix() -> None:
    why = reason(line(custom_id="q1", prompt="p", temperature=5))
    assert why.startswith("temperature: ")
    assert "less than or equal to 2" in why


def test_out_of_range_default_is_rejected_naming_it() -> None:
    assert reason(line(custom_id="q1", prompt="p"), {"max_tokens": 0}).startswith("max_tokens: ")


@pytest.mark.parametrize(
    "raw",
    [b'\xff\xfe{"custom_id": "q1"}', b'{"custom_id": "q1", "prompt": "p"}\x00\x00'],
    ids=["not-utf-8", "nul-bytes"],
)
def test_binary_line_is_rejected_as_a_binary_file(raw: bytes) -> None:
    assert "is this a binary file?" in reason(raw)


def test_line_with_both_prompt_and_messages_is_rejected() -> None:
    raw = line(custom_id="q1", prompt="p", messages=[{"role": "user", "content": "hi"}])
    assert "exactly one of `prompt` and `messages`" in reason(raw)


# Strict types: no strings or booleans as integers, no NaN.


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (
            line(custom_id="q", prompt="p", max_tokens="10"),
            "max_tokens: Input should be an integer, got a string",
        ),
        (
            line(custom_id="q", prompt="p", max_tokens=True),
            "max_tokens: Input should be an integer, got a boolean",
        ),
        (
            line(custom_id="q", prompt="p", seed=1.5),
            "seed: Input should be an integer, got the number 1.5",
        ),
        (
            line(custom_id="q", prompt="p", ignore_eos=1),
            "ignore_eos: Input should be a valid boolean",
        ),
        (
            '{"custom_id": "q", "prompt": "p", "temperature": 1e999}',
            "temperature: Input should be a finite number, got inf",
        ),
        (openai({"prompt": "p", "max_tokens": "10"}), "max_tokens: Input should be an integer"),
        (
            openai({"prompt": "p", "logprobs": True}),
            "logprobs: Input should be an integer, got a boolean",
        ),
        (openai({"prompt": "p", "temperature": "0"}), "temperature: Input should be a number"),
    ],
    ids=[
        "string",
        "boolean",
        "fraction",
        "bool-as-int",
        "overflow",
        "openai-string",
        "openai-logprobs-true",
        "openai-temperature-string",
    ],
)
def test_a_number_of_the_wrong_type_is_rejected_naming_the_field(raw: str, why: str) -> None:
    assert reason(raw).startswith(why)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected_as_not_json(constant: str) -> None:
    raw = f'{{"custom_id": "q", "prompt": "p", "temperature": {constant}}}'
    assert reason(raw) == (
        f"invalid JSON: {constant} is not a JSON value (JSON numbers are finite)"
    )


def test_an_integer_of_more_digits_than_python_reads_is_rejected_as_invalid_json() -> None:
    raw = '{"custom_id": "q", "prompt": "p", "seed": ' + "9" * 5000 + "}"
    assert reason(raw).startswith("invalid JSON: Exceeds the limit (4300 digits)")


def test_openai_text_part_whose_text_is_not_a_string_is_rejected() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}
    assert reason(openai(body, CHAT)) == (
        "body.messages: a text content part's `text` must be a string"
    )


@pytest.mark.parametrize(
    "key", [" 5", "5.0", "\u0665", "-1"], ids=["padded", "decimal", "arabic-digit", "negative"]
)
def test_openai_logit_bias_key_must_be_ascii_digits(key: str) -> None:
    assert reason(openai({"prompt": "p", "logit_bias": {key: 1}})) == (
        "body.logit_bias: keys must be token ids"
    )


# Strings must encode as UTF-8: a lone surrogate escape is valid JSON but not valid Unicode.


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (
            '{"custom_id": "q", "prompt": "a\\ud800"}',
            "prompt: cannot be encoded as UTF-8: a lone surrogate (\\ud800) at character 1",
        ),
        ('{"custom_id": "\\udfff", "prompt": "p"}', "custom_id: cannot be encoded as UTF-8"),
        ('{"custom_id": "q", "prompt": "p", "stop": ["\\udc00"]}', "stop.0: cannot be encoded"),
        (
            '{"custom_id": "q", "prompt": "p", "\\ud800": 1}',
            "a field name in the line cannot be encoded",
        ),
        (
            openai({"prompt": "p", "metadata": {"k": "\ud800"}}),
            "body.metadata.k: cannot be encoded",
        ),
        (openai({"prompt": "p", "user": "\ud800"}), "body.user: cannot be encoded"),
        (
            openai(
                {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
                CHAT,
            ),
            "body.messages.0.content.0.text: cannot be encoded",
        ),
        (openai({"prompt": "p", "\ud800": 1}), "a field name in body cannot be encoded"),
    ],
    ids=[
        "prompt",
        "custom-id",
        "stop",
        "field-name",
        "ignored-openai-field",
        "openai-user",
        "openai-content-part",
        "openai-field-name",
    ],
)
def test_a_lone_surrogate_anywhere_in_a_line_is_rejected_saying_where(raw: str, why: str) -> None:
    assert reason(raw).startswith(why)


def test_a_line_given_as_a_mapping_with_a_lone_surrogate_is_rejected() -> None:
    assert reason({"custom_id": "q", "prompt": "\ud800"}).startswith("prompt: cannot be encoded")


def test_an_escaped_surrogate_pair_is_a_character_and_is_accepted() -> None:
    assert parse_line('{"custom_id": "q", "prompt": "\\ud83d\\ude00"}', {}).spec.prompt == "😀"


# Limits checked before parsing: nesting depth and line length.


def nested(depth: int, closed: bool = True) -> str:
    """A genq line whose `x` nests arrays so that the line is `depth` levels deep."""
    inner = "[" * (depth - 1) + ("]" * (depth - 1) if closed else "")
    return '{"custom_id": "q", "prompt": "p", "x": ' + inner + ("}" if closed else "")


@pytest.mark.parametrize(
    "raw",
    [nested(100_000), nested(100_000, closed=False), nested(JSON_DEPTH_MAX + 1)],
    ids=["100k-deep", "100k-unclosed", "one-too-deep"],
)
def test_a_line_nested_deeper_than_the_limit_is_rejected_naming_the_limit(raw: str) -> None:
    assert reason(raw) == "nested deeper than 32 levels (arrays and objects)"


def test_a_line_nested_to_the_limit_is_parsed() -> None:
    assert reason(nested(JSON_DEPTH_MAX)) == "x: Extra inputs are not permitted"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    prompt = '\\"[{' * 10_000 + "[" * 10_000
    spec = parse_line('{"custom_id": "q", "prompt": "' + prompt + '"}', {}).spec
    assert spec.prompt == '"[{' * 10_000 + "[" * 10_000


def test_a_mapping_nested_deeper_than_the_limit_is_rejected() -> None:
    value: list[Any] = []
    for _ in range(JSON_DEPTH_MAX):
        value = [value]
    assert reason({"custom_id": "q", "prompt": "p", "x": value}) == (
        "nested deeper than 32 levels (arrays and objects)"
    )


TOO_LONG = "line longer than 16,777,216 bytes (16 MiB), the limit on a line"


def test_a_line_longer_than_the_limit_is_rejected_before_parsing() -> None:
    padding = " " * (LINE_BYTES_MAX - 40)  # valid JSON, past the limit with the fields
    raw = '{"custom_id": "q", "prompt": "p",' + padding + '"seed": 1}'
    assert len(raw) > LINE_BYTES_MAX
    assert reason(raw) == TOO_LONG
    assert reason(raw.encode()) == TOO_LONG
    assert parse_line(raw[: LINE_BYTES_MAX - 12] + '"seed": 1}', {}).spec.seed == 1


def test_a_text_line_is_measured_in_utf8_bytes() -> None:
    raw = '{"custom_id": "q", "prompt": "' + "é" * (LINE_BYTES_MAX // 2) + '"}'
    assert len(raw) < LINE_BYTES_MAX
    assert reason(raw) == TOO_LONG


def test_a_file_line_longer_than_the_limit_is_read_in_bounded_memory_and_rejected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "batch.jsonl"
    with path.open("wb") as file:
        file.write(b'{"custom_id": "a", "prompt": "')
        file.write(b"x" * (LINE_BYTES_MAX + 2**20))
        file.write(b'"}\n' + line(custom_id="b", prompt="p").encode() + b"\n")
    numbers = [(n, len(raw)) for n, raw in raw_lines(path)]
    assert numbers == [(1, LINE_BYTES_MAX + 1), (2, len(line(custom_id="b", prompt="p")) + 1)]
    found = scan(path, {}, accept_all)
    assert found.valid == 1
    [reject] = found.rejects
    assert (reject.line, reject.reason) == (1, TOO_LONG)
    assert reject.raw == '{"custom_id": "a", "prompt": "' + "x" * (SHOWN_CHARS_MAX - 30)


def test_a_file_of_one_endless_line_is_rejected_by_line(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b"x" * (LINE_BYTES_MAX * 2))  # no newline at all
    found = scan(path, {}, accept_all)
    assert (found.valid, [(r.line, r.reason) for r in found.rejects]) == (0, [(1, TOO_LONG)])


# Files: only regular files are batches.


def test_a_directory_is_refused_as_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidBatch) as caught:
        list(raw_lines(tmp_path))
    assert str(caught.value) == (
        f"{tmp_path}: a directory, not a regular file; a batch is a JSONL file"
    )


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "batch.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(InvalidBatch, match="a FIFO \\(named pipe\\), not a regular file"):
        list(raw_lines(fifo))


def test_a_device_is_refused_as_not_a_regular_file() -> None:
    with pytest.raises(InvalidBatch, match=r"^/dev/zero: a character device, not a regular"):
        list(raw_lines("/dev/zero"))


def test_a_missing_file_is_refused_saying_why(tmp_path: Path) -> None:
    with pytest.raises(InvalidBatch, match=r"missing\.jsonl: cannot be read \(No such file"):
        list(raw_lines(tmp_path / "missing.jsonl"))


# Reading lines.


def test_raw_lines_of_a_file_skip_blank_lines_and_keep_true_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{"b": 2}\r\n\t\n{"c": 3}')
    assert list(raw_lines(path)) == [(1, b'{"a": 1}\n'), (4, b'{"b": 2}\r\n'), (6, b'{"c": 3}')]
    assert list(raw_lines(str(path))) == list(raw_lines(path))


def test_raw_lines_of_a_list_skip_blank_strings_and_keep_true_line_numbers() -> None:
    mapping = {"custom_id": "m"}
    lines: list[str | bytes | dict[str, Any]] = ["a", "", "  \n", b"b", b"\n", mapping]
    assert list(raw_lines(lines)) == [(1, "a"), (4, b"b"), (6, mapping)]


# Checking a whole batch.

BATCH = [
    line(custom_id="a", prompt="p"),  # 1
    "",  # 2
    "not json",  # 3
    line(custom_id="b", prompt="p", temperature=5),  # 4
    line(custom_id="c", prompt="p"),  # 5
    line(custom_id="a", prompt="again"),  # 6
    line(custom_id="d", prompt="p", model="x"),  # 7
    line(custom_id="e", messages=[{"role": "user", "content": "hi"}]),  # 8
]


def test_scan_counts_the_valid_lines_and_rejects_each_bad_one_with_its_line() -> None:
    found = scan(BATCH, {}, no_model_x)
    assert found.valid == 3
    assert [(r.line, r.raw) for r in found.rejects] == [
        (3, "not json"),
        (4, BATCH[3]),
        (6, BATCH[5]),
        (7, BATCH[6]),
    ]
    assert found.rejected_lines == {3, 4, 6, 7}
    assert found.rejects[0].custom_id is None  # no custom_id can be read from it
    assert [r.custom_id for r in found.rejects[2:]] == ["a", "d"]
    assert found.rejects[0].reason.startswith("invalid JSON")
    assert found.rejects[1].reason.startswith("temperature: ")


def test_scan_reports_a_duplicate_custom_id_on_its_second_line_naming_the_first() -> None:
    found = scan(BATCH, {}, accept_all)
    duplicate = next(r for r in found.rejects if r.line == 6)
    assert duplicate.reason == "duplicate custom_id 'a' (first on line 1)"


def test_scan_rejects_a_line_its_check_rejects_with_the_checks_reason() -> None:
    found = scan(BATCH, {}, no_model_x)
    assert Reject(7, "unknown model 'x'", BATCH[6], "d") in found.rejects


def test_scan_applies_the_defaults_before_checking() -> None:
    found = scan([line(custom_id="a", prompt="p")], {"model": "x"}, no_model_x)
    assert (found.valid, [r.reason for r in found.rejects]) == (0, ["unknown model 'x'"])


def test_scan_of_a_file_rejects_binary_lines_and_shows_them_as_text(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b'{"custom_id": "a", "prompt": "p"}\n\xff\x00junk\r\n')
    found = scan(path, {}, accept_all)
    assert found.valid == 1
    [reject] = found.rejects
    assert (reject.line, reject.raw) == (2, "\ufffd\x00junk")
    assert "binary file" in reject.reason


def test_reject_to_json_holds_line_custom_id_error_and_input() -> None:
    reject = Reject(6, "duplicate custom_id 'a' (first on line 1)", BATCH[5], "a")
    assert json.loads(reject.to_json()) == {
        "line": 6,
        "custom_id": "a",
        "error": "duplicate custom_id 'a' (first on line 1)",
        "input": BATCH[5],
    }
    assert json.loads(Reject(3, "invalid JSON", "x").to_json())["custom_id"] is None


def test_valid_lines_yields_the_accepted_lines_in_order_with_their_line_numbers() -> None:
    found = scan(BATCH, {"max_tokens": 9}, no_model_x)
    lines = list(valid_lines(BATCH, {"max_tokens": 9}, found.rejected_lines))
    assert [(ln.line, ln.custom_id) for ln in lines] == [(1, "a"), (5, "c"), (8, "e")]
    assert all(ln.spec.max_tokens == 9 for ln in lines)
    assert lines[2].spec.messages == [ChatMessage(role="user", content="hi")]


def test_valid_lines_reads_a_file_again_from_its_path(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    path.write_text("\n".join(BATCH) + "\n")
    found = scan(path, {}, no_model_x)
    assert [ln.line for ln in valid_lines(path, {}, found.rejected_lines)] == [1, 5, 8]


# Any batch: the valid lines and the rejects account for every non-blank line.

INVALID: list[Callable[[str], str]] = [
    lambda cid: "{not json",
    lambda cid: json.dumps([cid]),
    lambda cid: line(prompt="p"),
    lambda cid: line(custom_id=cid, prompt="p", temperature=5),
    lambda cid: line(custom_id=cid, prompt="p", messages=[{"role": "user", "content": "x"}]),
    lambda cid: openai({"prompt": "p", "n": 2}, custom_id=cid),
    lambda cid: line(custom_id=cid, prompt="p", model="x"),
]


@settings(deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.none() | st.integers(0, len(INVALID) - 1),
            st.sampled_from(["", " ", "\t\n"]) | st.none(),
        ),
        max_size=30,
        unique_by=lambda entry: entry[0],
    )
)
def test_every_non_blank_line_is_either_valid_or_rejected_on_its_own_line(
    entries: list[tuple[str, int | None, str | None]],
) -> None:
    lines: list[str] = []
    invalid: set[int] = set()
    valid: list[tuple[int, str]] = []
    for custom_id, kind, blank in entries:
        if blank is not None:
            lines.append(blank)
        if kind is None:
            lines.append(line(custom_id=custom_id, prompt="p"))
            valid.append((len(lines), custom_id))
        else:
            lines.append(INVALID[kind](custom_id))
            invalid.add(len(lines))

    found = scan(lines, {}, no_model_x)

    assert found.valid + len(found.rejects) == sum(1 for raw in lines if raw.strip())
    assert found.valid == len(valid)
    assert [r.line for r in found.rejects] == sorted(invalid)
    chosen = valid_lines(lines, {}, found.rejected_lines)
    assert [(ln.line, ln.custom_id) for ln in chosen] == valid


@pytest.mark.parametrize(
    ("url", "body", "logprobs"),
    [
        (COMPLETIONS, {"prompt": "p", "logprobs": 3}, 3),
        (COMPLETIONS, {"prompt": "p", "logprobs": 0}, 0),
        (COMPLETIONS, {"prompt": "p", "logprobs": None}, None),
        (CHAT, {"logprobs": True, "top_logprobs": 5}, 5),
        (CHAT, {"logprobs": True}, 0),
        (CHAT, {"logprobs": False}, None),
    ],
    ids=["completions-3", "completions-0", "completions-null", "chat-5", "chat-own", "chat-off"],
)
def test_openai_logprobs_map_to_genq_logprobs(
    url: str, body: dict[str, Any], logprobs: int | None
) -> None:
    if url == CHAT:
        body = {"messages": [{"role": "user", "content": "hi"}], **body}
    assert parse_line(openai(body, url=url), {}).spec.logprobs == logprobs


@pytest.mark.parametrize(
    ("url", "body", "message"),
    [
        (COMPLETIONS, {"prompt": "p", "logprobs": 21}, "logprobs"),
        (COMPLETIONS, {"prompt": "p", "top_logprobs": 2}, "body.top_logprobs: for /v1/chat"),
        (CHAT, {"logprobs": 2}, "body.logprobs: must be true or false"),
        (CHAT, {"top_logprobs": 2}, "body.top_logprobs: needs body.logprobs"),
    ],
    ids=["too-many", "top-on-completions", "chat-number", "top-without-logprobs"],
)
def test_openai_logprobs_out_of_form_are_rejected(
    url: str, body: dict[str, Any], message: str
) -> None:
    if url == CHAT:
        body = {"messages": [{"role": "user", "content": "hi"}], **body}
    assert message in reason(openai(body, url=url))


def test_openai_ignore_eos_is_honoured_as_llama_cpp_and_vllm_servers_do() -> None:
    assert parse_line(openai({"prompt": "p", "ignore_eos": True}), {}).spec.ignore_eos is True
    assert parse_line(openai({"prompt": "p"}), {}).spec.ignore_eos is False

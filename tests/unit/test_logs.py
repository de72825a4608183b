"""Structured log lines: one line per event, its fields after it, no secrets."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from genq.common.logs import EventFormatter, fields, mask_secrets


def record(
    message: str, *args: object, extra: dict[str, object] | None = None
) -> logging.LogRecord:
    logger = logging.getLogger("genq.test")
    made = logger.makeRecord("genq.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in (extra or {}).items():
        setattr(made, key, value)
    return made


def test_text_lines_carry_the_event_then_its_fields_then_the_process_context() -> None:
    formatter = EventFormatter("text", {"worker": "genq@host"})
    line = formatter.format(record("job ended", extra=fields(job="ab12", epoch=1, tokens=37)))
    assert line.endswith("INFO genq.test: job ended job=ab12 epoch=1 tokens=37 worker=genq@host")
    assert line[:4].isdigit() and "T" in line.split()[0] and line.split()[0].endswith("Z")


def test_text_values_with_spaces_or_quotes_are_quoted_so_the_line_still_parses() -> None:
    line = EventFormatter("text").format(
        record("x", extra=fields(msg='a "b" c', queues=["cpu.tiny"], empty=""))
    )
    assert 'msg="a \\"b\\" c"' in line
    assert 'queues="[\\"cpu.tiny\\"]"' in line
    assert 'empty=""' in line


def test_json_lines_are_one_object_each_even_with_a_traceback() -> None:
    formatter = EventFormatter("json", {"worker": "w@h"})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        failed = record("job failed: %s", "boom", extra=fields(job="ab12", epoch=0))
        failed.exc_info = sys.exc_info()
    line = formatter.format(failed)
    assert "\n" not in line
    event = json.loads(line)
    assert event["event"] == "job failed: boom"
    assert (event["level"], event["logger"], event["job"], event["epoch"]) == (
        "info",
        "genq.test",
        "ab12",
        0,
    )
    assert event["worker"] == "w@h" and "ValueError: boom" in event["error"]


def test_an_events_own_field_wins_over_the_process_context() -> None:
    line = EventFormatter("json", {"worker": "w@h"}).format(record("x", extra=fields(worker="o")))
    assert json.loads(line)["worker"] == "o"


def test_celerys_task_id_is_kept_as_a_field() -> None:
    line = EventFormatter("json").format(record("x", extra={"task_id": "t-1"}))
    assert json.loads(line)["task"] == "t-1"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("Connected to redis://:s3cret@host:6379/0", "s3cret"),
        ("broker rediss://user:p%40ss@host:6380/1 ok", "p%40ss"),
        ("url=redis://host/0?password=hunter2&db=1", "hunter2"),
    ],
)
def test_passwords_in_urls_are_masked_in_every_line(line: str, secret: str) -> None:
    masked = mask_secrets(line)
    assert secret not in masked and "***" in masked
    rendered = EventFormatter("text").format(record(line))
    assert secret not in rendered


def test_a_password_with_an_unencoded_at_sign_is_masked_whole() -> None:
    # redis-py reads the password of redis://u:p@ss@host as p@ss: nothing of it may show.
    line = "Connected to redis://u:p@ss@host:6379/0 and redis://:x@other/1"
    assert mask_secrets(line) == "Connected to redis://u:***@host:6379/0 and redis://:***@other/1"


def test_a_url_without_a_password_is_left_alone() -> None:
    assert mask_secrets("redis://host:6379/0 and http://a:80/b") == (
        "redis://host:6379/0 and http://a:80/b"
    )


def test_text_lines_stay_one_line_with_a_multiline_message_and_a_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("first\nsecond\n")
        failed.exc_info = sys.exc_info()
    line = EventFormatter("text").format(failed)
    assert "\n" not in line
    assert "first\\nsecond error=" in line and "ValueError: boom" in line

"""The relay's fast path: a token frame recognized by its exact bytes, without pydantic.

Nearly every frame is a token frame exactly as a worker writes it (`TokenFrame(...)
.model_dump_json()`: no whitespace, fields in declaration order, no logprobs). `CANONICAL_TOKEN`
matches only such bytes, and only a subset of what `genq.common.frames.parse_frame` accepts: a job
id of 32 hex digits, epoch and seq below 10**18 (seq from 1), JSON string escapes other than
lone surrogates, integer token ids, valid UTF-8 (checked apart). Anything else (another frame
type, logprobs, another spelling of the same frame, junk) goes through `parse_frame`, which
validates it whole. So correctness never depends on pydantic's field order; speed does, and
tests/unit/test_relay_shape.py fails if the canonical frame stops matching (and checks, with
generated frames and junk, that whatever matches is a valid frame with the same header).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_INT = rb"(?:0|[1-9][0-9]{0,17})"  # below 10**18: a valid part of a stream entry id
_ID = rb"(?!0[0-9])[0-9]{1,18}+"  # the same numbers, matched faster (many per frame)
# A string's bytes: any but the quote, the backslash and controls, spelled as the ranges it
# keeps (re scans such a set several times faster than the same set spelled negated), or an
# escape other than a lone surrogate.
_PLAIN = rb"[\x20\x21\x23-\x5b\x5d-\xff]++"
_ESCAPE = rb'\\(?:["\\/bfnrt]|u(?![dD][89a-fA-F])[0-9a-fA-F]{4})'
_STRING = rb'"(?:' + _PLAIN + rb"|" + _ESCAPE + rb')*+"'
CANONICAL_TOKEN = re.compile(
    rb'\{"v":1,"job_id":"([0-9a-f]{32})","epoch":(' + _INT + rb'),"seq":([1-9][0-9]{0,17}),'
    rb'"ts_ms":(' + _INT + rb'),"type":"token","data":\{"text":' + _STRING + rb","
    rb'"token_ids":\[(?:' + _ID + rb"(?:," + _ID + rb')*+)?\],"tokens":(?:null|' + _INT + rb"),"
    rb'"logprobs":null\}\}'
)


_FULLMATCH = CANONICAL_TOKEN.fullmatch


def canonical_token(raw: bytes) -> re.Match[bytes] | None:
    """The match of `raw` when it is a token frame in its canonical spelling (groups: job id,
    epoch, seq, ts_ms); else None (it may still be a valid frame: see above)."""
    match = _FULLMATCH(raw)
    if match is None or raw.isascii() or is_utf8(raw):
        return match
    return None


def canonical_tokens(messages: Iterable[bytes]) -> Iterator[re.Match[bytes] | None]:
    """`canonical_token` of each message, in order: the relay's hot loop (one generator
    frame per batch instead of a Python call per message)."""
    fullmatch = _FULLMATCH
    for raw in messages:
        match = fullmatch(raw)
        yield match if match is None or raw.isascii() or is_utf8(raw) else None


def is_utf8(raw: bytes) -> bool:
    """The pattern passes any byte above 0x1f inside the text: only UTF-8 may pass."""
    try:
        raw.decode()
    except UnicodeDecodeError:
        return False
    return True

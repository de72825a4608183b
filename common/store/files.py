"""Files the gateway keeps (OpenAI's /v1/files): JSONL uploads for batches, and the output
and error files of the gateway's batches.

Keys: `genq:file:{<file id>}`, a hash of the file's description (version 1: `v`, `bytes`,
`created_ms`, `filename`, `purpose`, `tenant`, as text; a file without `tenant` is
`default`'s); `genq:file:{<file id>}:content`, a string (the file's UTF-8 text); `genq:files`,
a sorted set of file ids by creation time (ms), and `genq:files:tenant:<tenant>`, the same of
one tenant's files, which listings read. Both keys of a file share its hash tag and expire
together; the indexes, whose members cannot expire, are pruned of files older than the
retention as they are read (every listing prunes `genq:files`), and a tenant's index expires
a retention after its newest file.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.common.tenants import DEFAULT_TENANT

FILE_ID_BYTES = 16  # 128 random bits: unguessable
_FILE_ID = re.compile(r"^file-[0-9a-f]{32}$")
VERSION = "1"


def new_file_id() -> str:
    return f"file-{secrets.token_hex(FILE_ID_BYTES)}"


def is_file_id(text: str) -> bool:
    """Whether `text` can name a file (anything else names none, and never becomes a key)."""
    return _FILE_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class StoredFile:
    """A file's description, as OpenAI's File object holds it."""

    file_id: str
    size: int  # bytes
    created_ms: int
    filename: str
    purpose: str
    tenant: str = DEFAULT_TENANT


def _meta_key(keys: Keys, file_id: str) -> str:
    return f"{keys.prefix}:file:{{{file_id}}}"


def _content_key(keys: Keys, file_id: str) -> str:
    return f"{keys.prefix}:file:{{{file_id}}}:content"


def _index_key(keys: Keys, tenant: str | None = None) -> str:
    """Every file's index; with `tenant`, that tenant's files' only."""
    every = f"{keys.prefix}:files"
    return every if tenant is None else f"{every}:tenant:{tenant}"


def _none(replies: list[Any]) -> None:
    return None


def put(keys: Keys, file: StoredFile, content: str, ttl_s: int) -> Command[None]:
    """Store a file (or replace it, same id), kept for `ttl_s`, and list it."""
    meta = _meta_key(keys, file.file_id)
    fields = {
        "v": VERSION,
        "bytes": str(file.size),
        "created_ms": str(file.created_ms),
        "filename": file.filename,
        "purpose": file.purpose,
        "tenant": file.tenant,
    }
    pairs = [part for item in fields.items() for part in item]
    return Command(
        (
            ("SET", _content_key(keys, file.file_id), content, "EX", ttl_s),
            ("HSET", meta, *pairs),
            ("EXPIRE", meta, ttl_s),
            ("ZADD", _index_key(keys), file.created_ms, file.file_id),
            ("ZADD", _index_key(keys, file.tenant), file.created_ms, file.file_id),
            ("EXPIRE", _index_key(keys, file.tenant), ttl_s),  # all past retention by then
        ),
        _none,
    )


def _decode(file_id: str, raw: Mapping[Any, Any]) -> StoredFile | None:
    if not raw:
        return None
    return StoredFile(
        file_id,
        int(raw["bytes"]),
        int(raw["created_ms"]),
        raw["filename"],
        raw["purpose"],
        raw.get("tenant", DEFAULT_TENANT),
    )


def read(keys: Keys, file_id: str) -> Command[StoredFile | None]:
    """A file's description; None when no such file is kept."""
    return Command(
        (("HGETALL", _meta_key(keys, file_id)),), lambda replies: _decode(file_id, replies[0])
    )


def read_many(keys: Keys, file_ids: Sequence[str]) -> Command[list[StoredFile]]:
    """The descriptions of those of `file_ids` still kept, in order."""
    ids = list(file_ids)

    def decode(replies: list[Any]) -> list[StoredFile]:
        found = (_decode(i, raw) for i, raw in zip(ids, replies, strict=True))
        return [file for file in found if file is not None]

    return Command(tuple(("HGETALL", _meta_key(keys, i)) for i in ids), decode)


def content(keys: Keys, file_id: str) -> Command[str | None]:
    """A file's text; None when no such file is kept."""
    return Command((("GET", _content_key(keys, file_id)),), lambda replies: replies[0])


def delete(keys: Keys, file: StoredFile) -> Command[bool]:
    """Delete a file; whether there was one."""
    file_id = file.file_id
    return Command(
        (
            ("DEL", _meta_key(keys, file_id), _content_key(keys, file_id)),
            ("ZREM", _index_key(keys), file_id),
            ("ZREM", _index_key(keys, file.tenant), file_id),
        ),
        lambda replies: bool(replies[0]),
    )


def ids(
    keys: Keys, kept_since_ms: int, newest_first: bool, tenant: str | None = None
) -> Command[list[str]]:
    """Every listed file id (of `tenant`, or of all when None) in creation order, after
    pruning those created before `kept_since_ms` (their retention has passed)."""
    index = _index_key(keys, tenant)
    order = ("ZREVRANGE", index, 0, -1) if newest_first else ("ZRANGE", index, 0, -1)
    pruned = dict.fromkeys((_index_key(keys), index))
    prune = [("ZREMRANGEBYSCORE", i, "-inf", f"({kept_since_ms}") for i in pruned]
    return Command((*prune, order), lambda replies: [str(file_id) for file_id in replies[-1]])

"""The gateway's API keys: which tenant each key acts for, whether it is an admin's, and each
tenant's policy (fair-share weight and quotas), from GENQ_API_KEYS and GENQ_API_KEYS_FILE.

The file is either TOML, one `[[keys]]` table per key:

    [[keys]]
    key = "sk-..."          # or sha256 = "<hex digest of the key>": the file holds no clear key
    tenant = "acme"         # default: `default`
    weight = 1              # fair-share weight (default 1)
    max_queued = 1000       # waiting jobs the tenant may hold (default: no limit)
    tokens_per_minute = 0   # 0: no limit
    admin = false           # an admin key sees every tenant's work

or bare keys, one a line (`#` starts a comment), each for tenant `default`, as GENQ_API_KEYS's
are. A file is TOML when its first line that is not blank or a comment starts with `[`, or when
it parses as TOML with a `keys` array; a bare line holds no whitespace, quote or `[`, so that a
TOML entry without its `[[keys]]` header is refused rather than taken for a key.

Only each key's SHA-256 digest is kept (`ApiKeys`): a key given in clear is hashed as it is
read. A request's key is hashed and compared with every digest in constant time (`match`).
Errors name the line or entry and never echo a key."""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genq.common.errors import KeyFileError
from genq.common.schemas import describe_validation
from genq.common.tenants import DEFAULT_TENANT, TenantName, TenantPolicy

KEY_PATTERN = r"^[!-~]{1,512}$"  # printable ASCII, no spaces: what a Bearer header carries
_HEADER = re.compile(r"^\s*\[\[\s*keys\s*\]\]")
_BARE = re.compile(r"^[^\s\"'\[]+$")
_POLICY_FIELDS = frozenset(TenantPolicy.model_fields)


def digest(key: str) -> bytes:
    """A key's SHA-256 digest, the only form of it the gateway keeps."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def digest_entry(key: str, tenant: str = DEFAULT_TENANT, admin: bool = False) -> str:
    """A keys-file entry that names `key` by its digest (`genq keys hash`)."""
    role = "admin = true\n" if admin else ""
    return f'[[keys]]\nsha256 = "{digest(key).hex()}"\ntenant = "{tenant}"\n{role}'


@dataclass(frozen=True)
class ApiKey:
    """One accepted key, by digest: whose work it acts for."""

    digest: bytes = field(repr=False)
    tenant: str = DEFAULT_TENANT
    admin: bool = False


@dataclass(frozen=True)
class ApiKeys:
    """The keys a gateway accepts (by digest) and the policies of the tenants its keys file
    names. No keys: the gateway is open (see genq.producer.gateway.auth)."""

    keys: tuple[ApiKey, ...] = ()
    policies: Mapping[str, TenantPolicy] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def match(self, given: str) -> ApiKey | None:
        """The key `given` is, if accepted. Its digest is compared with every key's, each in
        constant time and with no early exit, so timing tells nothing of which key is near."""
        wanted = digest(given)
        found = None
        for key in self.keys:
            if hmac.compare_digest(wanted, key.digest) and found is None:
                found = key
        return found


class _Entry(BaseModel):
    """A `[[keys]]` table, but its policy fields (TenantPolicy's)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    key: str | None = Field(None, pattern=KEY_PATTERN)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    tenant: TenantName = DEFAULT_TENANT
    admin: bool = False


@dataclass
class _Reader:
    """Collects keys and policies as entries are read, refusing contradictions."""

    keys: dict[bytes, tuple[ApiKey, str]] = field(default_factory=dict)
    policies: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)

    def add(self, key: ApiKey, where: str) -> None:
        seen = self.keys.get(key.digest)
        if seen is not None and seen[0] != key:
            raise KeyFileError(f"{where}: the same key as {seen[1]}, for another tenant or role")
        self.keys.setdefault(key.digest, (key, where))

    def add_policy(self, tenant: str, given: dict[str, Any], where: str) -> None:
        known, first = self.policies.setdefault(tenant, ({}, where))
        for name, value in given.items():
            if name in known and known[name] != value:
                raise KeyFileError(
                    f"{where}: tenant {tenant}'s {name} is {value} here but {known[name]} in "
                    f"{first}; give a tenant's policy once, or the same on each of its keys"
                )
            known[name] = value

    def table(self) -> ApiKeys:
        policies = {t: TenantPolicy.model_validate(p) for t, (p, _) in self.policies.items()}
        return ApiKeys(tuple(key for key, _ in self.keys.values()), policies)


def load(clear: Iterable[str], file_text: str | None, file_name: str = "keys file") -> ApiKeys:
    """The table of `clear` keys (tenant `default`) and of a keys file's text; KeyFileError
    naming the line or entry of what is wrong."""
    reader = _Reader()
    for key in clear:
        reader.add(ApiKey(digest(key)), "GENQ_API_KEYS")
    if file_text is not None:
        if is_toml(file_text):
            _read_toml(reader, file_text, file_name)
        else:
            _read_bare(reader, file_text, file_name)
    return reader.table()


def is_toml(text: str) -> bool:
    """Whether a keys file is TOML (see the module's docstring), not bare lines."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if stripped.startswith("["):
                return True
            break
    try:
        return isinstance(tomllib.loads(text).get("keys"), list)
    except tomllib.TOMLDecodeError:
        return False


def _read_bare(reader: _Reader, text: str, name: str) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        key = line.split("#", 1)[0].strip()
        if not key:
            continue
        if not _BARE.match(key) or not re.match(KEY_PATTERN, key):
            raise KeyFileError(
                f"{name}, line {number}: not a bare key (printable ASCII without spaces, "
                "quotes or '['); a TOML keys file gives each key as a [[keys]] table"
            )
        reader.add(ApiKey(digest(key)), f"{name}, line {number}")


def _read_toml(reader: _Reader, text: str, name: str) -> None:
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message gives a position, never the text
        raise KeyFileError(f"{name}: not valid TOML: {exc}") from None
    entries = parsed.get("keys")
    others = sorted(set(parsed) - {"keys"})
    if others or not isinstance(entries, list) or not entries:
        extra = f" (it also holds {', '.join(others)})" if others else ""
        message = f"{name}: a TOML keys file holds [[keys]] tables only, one or more{extra}"
        raise KeyFileError(message)
    places = _entry_places(text, len(entries))
    for index, entry in enumerate(entries):
        _read_entry(reader, entry, f"{name}, {places[index]}")


def _entry_places(text: str, count: int) -> Sequence[str]:
    """How errors name each entry: `entry N (line L)` when the `[[keys]]` headers can be
    counted, else `entry N`."""
    lines = [n for n, line in enumerate(text.splitlines(), 1) if _HEADER.match(line)]
    if len(lines) != count:
        return [f"entry {i}" for i in range(1, count + 1)]
    return [f"entry {i} (line {n})" for i, n in enumerate(lines, 1)]


def _read_entry(reader: _Reader, raw: Any, where: str) -> None:
    if not isinstance(raw, dict):
        raise KeyFileError(f"{where}: not a table")
    policy = {k: v for k, v in raw.items() if k in _POLICY_FIELDS}
    try:
        entry = _Entry.model_validate({k: v for k, v in raw.items() if k not in _POLICY_FIELDS})
        TenantPolicy.model_validate(policy, strict=True)
    except ValidationError as exc:  # loc and message only: never the value, which may be a key
        raise KeyFileError(f"{where}: {describe_validation(exc)}") from None
    if (entry.key is None) == (entry.sha256 is None):
        raise KeyFileError(f"{where}: give either `key` or `sha256`, not both or neither")
    hashed = bytes.fromhex(entry.sha256) if entry.sha256 else digest(entry.key or "")
    reader.add(ApiKey(hashed, entry.tenant, entry.admin), where)
    reader.add_policy(entry.tenant, policy, where)

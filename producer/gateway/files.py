"""/v1/files: JSONL uploads for batches (`purpose=batch`), kept in Redis for GENQ_JOB_TTL_S,
and the output and error files of batches (`batch_output`), in OpenAI's File shape. A file is
its uploader's tenant's (a batch's files, its batch's): another tenant's file is not found,
and lists hold only the principal's tenant's (an admin's: every tenant's)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from genq.common.lifecycle import now_ms
from genq.common.store import files as file_store
from genq.common.store.files import StoredFile
from genq.producer.gateway import chunks
from genq.producer.gateway.auth import Principal
from genq.producer.gateway.errors import ApiError
from genq.producer.gateway.errors import not_found as _not_found
from genq.producer.gateway.records import Records
from genq.producer.gateway.uploads import read_upload

LIST_MAX = 10_000  # OpenAI's largest `limit`


def file_object(file: StoredFile) -> dict[str, Any]:
    return {
        "id": file.file_id,
        "object": "file",
        "bytes": file.size,
        "created_at": file.created_ms // 1000,
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",  # deprecated in OpenAI's API, still read by older clients
        "status_details": None,
    }


def not_found(file_id: str) -> ApiError:
    return _not_found("File object", file_id, "file_id")


def _after(ids: list[str], after: str | None) -> list[str]:
    start = ids.index(after) + 1 if after in ids else 0
    return ids[start:]


class Files:
    """The files the gateway keeps (common/store/files.py), through its Records."""

    def __init__(self, records: Records) -> None:
        self._records = records

    async def store(self, file: StoredFile, text: str) -> None:
        """Keep a file for GENQ_JOB_TTL_S."""
        records = self._records
        ttl_s = records.settings.job_ttl_s
        await records.run(file_store.put(records.keys, file, text, ttl_s))

    async def find(self, file_id: str, principal: Principal) -> StoredFile:
        """A kept file's description; 404 when there is none the principal sees."""
        if not file_store.is_file_id(file_id):
            raise not_found(file_id)
        file = await self._records.run(file_store.read(self._records.keys, file_id))
        if file is None or not principal.sees(file.tenant):
            raise not_found(file_id)
        return file

    async def text_of(self, file_id: str, principal: Principal) -> str:
        """A kept file's text; 404 when there is none the principal sees."""
        await self.find(file_id, principal)
        text = await self._records.run(file_store.content(self._records.keys, file_id))
        if text is None:  # expired between the two reads
            raise not_found(file_id)
        return text

    async def create(self, request: Request, principal: Principal) -> dict[str, Any]:
        """POST /v1/files: keep an upload (see uploads.py), as the principal's tenant's."""
        upload = await read_upload(request, self._records.settings.file_bytes_max)
        new_id = file_store.new_file_id()
        stored = StoredFile(
            new_id, upload.size, now_ms(), upload.filename, upload.purpose, principal.tenant
        )
        await self.store(stored, upload.text)
        return file_object(stored)

    async def page(
        self,
        principal: Principal,
        purpose: str | None,
        limit: int,
        newest_first: bool,
        after: str | None,
    ) -> dict[str, Any]:
        records = self._records
        since = now_ms() - records.settings.job_ttl_s * 1000
        tenant = None if principal.admin else principal.tenant
        ids = await records.run(file_store.ids(records.keys, since, newest_first, tenant))
        wanted = _after(ids, after) if purpose else _after(ids, after)[: limit + 1]
        listed = await records.run(file_store.read_many(records.keys, wanted))
        matching = [f for f in listed if purpose is None or f.purpose == purpose]
        data = [file_object(f) for f in matching[:limit]]
        return chunks.list_page(data, has_more=len(matching) > limit)

    async def get(self, file_id: str, principal: Principal) -> dict[str, Any]:
        return file_object(await self.find(file_id, principal))

    async def content(self, file_id: str, principal: Principal) -> Response:
        text = await self.text_of(file_id, principal)
        return Response(text.encode("utf-8"), media_type="application/octet-stream")

    async def delete(self, file_id: str, principal: Principal) -> dict[str, Any]:
        file = await self.find(file_id, principal)
        if not await self._records.run(file_store.delete(self._records.keys, file)):
            raise not_found(file_id)
        return {"id": file_id, "object": "file", "deleted": True}

"""/v1/batches on genq's batches: an uploaded JSONL file of OpenAI request lines becomes a genq
batch of the same id; its status, request counts and output and error files in OpenAI's
shapes. The gateway's own record of a batch is common/store/openai_batches.py's.

Statuses: `validating` while the input file is checked and submitted (within the POST);
`failed` when a line is invalid (nothing is submitted; `errors` lists each line's reason);
`in_progress`, then `completed`, or `expired` when some job did not start within the
completion window; `cancelling` then `cancelled` after a cancel. The output and error files
are written when a read finds the batch ended (OpenAI's `finalizing` is never seen).

A batch is its creator's tenant's, and so are its jobs and its output and error files; its
input file must be the same tenant's. Another tenant's batch is not found, and lists hold only
the principal's tenant's (an admin's: every tenant's).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genq.common.errors import GenqError, InvalidBatch, InvalidJob, QuotaExceeded
from genq.common.ids import is_job_id, new_batch_id
from genq.common.lifecycle import now_ms
from genq.common.schemas import BatchStatus, JobRecord, JobSpec, JobState
from genq.common.store import files as file_store
from genq.common.store import jobs as job_store
from genq.common.store import openai_batches as batch_store
from genq.common.store.files import StoredFile
from genq.common.store.gateway import Kind, StreamMeta
from genq.common.store.openai_batches import ApiBatch, LineErrorInfo
from genq.producer.batchfile import scan
from genq.producer.client import AsyncClient
from genq.producer.gateway import chunks
from genq.producer.gateway.auth import Principal
from genq.producer.gateway.errors import ApiError, shown
from genq.producer.gateway.errors import not_found as _not_found
from genq.producer.gateway.files import Files
from genq.producer.gateway.records import Records

WINDOW_MAX_S = 7 * 86_400
_WINDOW = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_BATCH_ID = re.compile(r"^batch_[0-9a-f]{24}$")  # those the gateway makes (new_batch_id)
LIST_MAX = 100
METADATA_PAIRS_MAX = 16  # OpenAI's limits on `metadata`
METADATA_KEY_MAX, METADATA_VALUE_MAX = 64, 512
READ_PAGE = 200  # job records read per round trip while writing the output files
# The error codes of request lines that ended without a result, by state.
_ENDED_CODES = {
    JobState.CANCELLED: ("batch_cancelled", "the batch was cancelled before this request ended"),
    JobState.EXPIRED: ("batch_expired", "this request did not start within the completion window"),
    JobState.FAILED: ("generation_failed", "the request failed"),
}


class CreateBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: Literal["/v1/chat/completions", "/v1/completions"]
    completion_window: str = Field(description="24h, or genq's 1s to 7d: <N>s|m|h|d")
    metadata: dict[str, str] | None = None


def window_s(window: str) -> int:
    """A completion window in seconds; 400 for one genq does not take."""
    match = _WINDOW.fullmatch(window)
    seconds = int(match[1]) * _UNIT_S[match[2]] if match else 0
    if not 1 <= seconds <= WINDOW_MAX_S:
        message = (
            f"completion_window: {shown(window)!r} is not a window genq takes: 24h, or <N>s|m|h|d "
            "from 1s to 7d"
        )
        raise ApiError(400, message, param="completion_window")
    return seconds


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    too_long = any(
        len(k) > METADATA_KEY_MAX or len(v) > METADATA_VALUE_MAX for k, v in metadata.items()
    )
    if len(metadata) > METADATA_PAIRS_MAX or too_long:
        message = (
            f"metadata: at most {METADATA_PAIRS_MAX} pairs, keys of at most "
            f"{METADATA_KEY_MAX} characters, values of at most {METADATA_VALUE_MAX}"
        )
        raise ApiError(400, message, param="metadata")


def not_found(batch_id: str) -> ApiError:
    return _not_found("Batch object", batch_id, "batch_id")


def endpoint_errors(lines: list[str], endpoint: str) -> list[LineErrorInfo]:
    """Lines whose `url` is not the batch's endpoint (OpenAI asks one endpoint a batch). Lines
    that are not JSON objects are left to genq's checks, which name their fault."""
    errors = []
    for number, line in enumerate(lines, 1):
        try:
            obj = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("url") != endpoint:
            message = f"url: must be the batch's endpoint {endpoint}, got {obj.get('url')!r}"
            errors.append(LineErrorInfo(code="invalid_url", message=message, line=number))
    return errors


def _rejects(exc: InvalidBatch) -> list[LineErrorInfo]:
    if not exc.rejects:  # the batch as a whole: empty, or every line invalid
        return [LineErrorInfo(code="invalid_file", message=str(exc).removeprefix("batch: "))]
    return [
        LineErrorInfo(code="invalid_request", message=reason, line=line)
        for line, reason in exc.rejects
    ]


def status_of(batch: ApiBatch, status: BatchStatus | None) -> str:
    """OpenAI's status of a batch from the gateway's record and genq's counts."""
    if batch.state != "submitted" or status is None:
        return batch.state if batch.state != "submitted" else "in_progress"
    if not status.complete:
        return "cancelling" if status.cancel_requested else "in_progress"
    if status.cancel_requested:
        return "cancelled"
    return "expired" if status.expired else "completed"


def _s(ms: int) -> int | None:
    return ms // 1000 if ms else None


def _timestamps(batch: ApiBatch, status: BatchStatus | None, state: str) -> dict[str, Any]:
    ended_s = _s(status.finished_ms) if status is not None else None
    ends = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}
    stamps: dict[str, Any] = {
        "created_at": batch.created_ms // 1000,
        "in_progress_at": _s(batch.submitted_ms),
        "expires_at": batch.created_ms // 1000 + batch.window_s,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": _s(batch.failed_ms),
        "expired_at": None,
        "cancelling_at": _s(batch.cancelling_ms),
        "cancelled_at": None,
    }
    if state in ends:
        stamps[ends[state]] = ended_s
        stamps["finalizing_at"] = ended_s
    return stamps


def _counts(status: BatchStatus | None) -> dict[str, int]:
    if status is None:
        return {"total": 0, "completed": 0, "failed": 0}
    return {
        "total": status.total,
        "completed": status.succeeded,
        "failed": status.ended - status.succeeded,
    }


def batch_object(batch: ApiBatch, status: BatchStatus | None) -> dict[str, Any]:
    state = status_of(batch, status)
    errors = [e.model_dump() for e in batch.errors]
    written = batch.files_written
    return {
        "id": batch.batch_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": {"object": "list", "data": errors} if errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": state,
        "output_file_id": batch.output_file_id if written and batch.output_lines else None,
        "error_file_id": batch.error_file_id if written and batch.error_lines else None,
        **_timestamps(batch, status, state),
        "request_counts": _counts(status),
        "metadata": batch.metadata,
    }


def output_line(job_id: str, record: JobRecord | None, endpoint: str) -> tuple[bool, str]:
    """A job's line of the output file (True) or of the error file (False), OpenAI's
    shape: {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}."""
    line: dict[str, Any] = {"id": f"batch_req_{job_id}", "custom_id": "", "response": None}
    if record is None:
        error = {"code": "not_retained", "message": "the request's record is no longer kept"}
        return False, json.dumps({**line, "error": error})
    line["custom_id"] = record.custom_id
    if record.state == JobState.SUCCEEDED and record.result is not None:
        kind: Kind = "chat" if endpoint == "/v1/chat/completions" else "completion"
        result = record.result
        meta = StreamMeta(kind, result.model, record.finished_ms // 1000, include_usage=False)
        body = chunks.response(meta, result)  # what a non-streaming request is answered
        line["response"] = {"status_code": 200, "request_id": job_id, "body": body}
        return True, json.dumps({**line, "error": None})
    code, message = _ENDED_CODES.get(record.state, ("generation_failed", "the request failed"))
    if record.state == JobState.FAILED:
        code, message = record.error_code or code, record.error or message
    return False, json.dumps({**line, "error": {"code": code, "message": message}})


class Batches:
    """OpenAI's batches on genq's: the gateway's record of each (through its Records), the
    batch itself through the client, the input and output files through Files. `check`
    judges a job as the client's submit would (used to list every bad line of a file)."""

    def __init__(
        self, records: Records, client: AsyncClient, files: Files, check: Callable[[JobSpec], None]
    ) -> None:
        self._records, self._client, self._files, self._check = records, client, files, check

    # -- creating a batch ----------------------------------------------------------------

    async def create(self, body: CreateBatch, principal: Principal) -> dict[str, Any]:
        seconds = window_s(body.completion_window)
        _check_metadata(body.metadata)
        lines = await self._input_lines(body.input_file_id, principal)
        batch = ApiBatch(
            batch_id=new_batch_id(),
            endpoint=body.endpoint,
            input_file_id=body.input_file_id,
            completion_window=body.completion_window,
            window_s=seconds,
            metadata=body.metadata,
            created_ms=now_ms(),
            tenant=principal.tenant,
            output_file_id=file_store.new_file_id(),
            error_file_id=file_store.new_file_id(),
        )
        await self._save(batch)  # seen as `validating` meanwhile
        return await self.describe(await self._submit(batch, lines))

    async def _input_lines(self, file_id: str, principal: Principal) -> list[str]:
        file = await self._input_file(file_id, principal)
        if file.purpose != "batch":
            message = f"input_file_id: {file_id} has purpose {file.purpose!r}, not 'batch'"
            raise ApiError(400, message, param="input_file_id")
        return (await self._files.text_of(file_id, principal)).split("\n")

    async def _input_file(self, file_id: str, principal: Principal) -> StoredFile:
        try:
            return await self._files.find(file_id, principal)
        except ApiError as exc:
            exc.param = "input_file_id"
            raise

    async def _validate(self, lines: list[str], endpoint: str) -> list[LineErrorInfo]:
        """Every line's faults, when some line's url is not the endpoint (nothing is
        submitted)."""
        wrong = endpoint_errors(lines, endpoint)
        if not wrong:
            return []
        found = await asyncio.to_thread(scan, lines, {}, self._check)
        others = [
            LineErrorInfo(code="invalid_request", message=r.reason, line=r.line)
            for r in found.rejects
            if r.line not in {w.line for w in wrong}
        ]
        return sorted([*wrong, *others], key=lambda e: e.line or 0)

    async def _save(self, batch: ApiBatch) -> None:
        records = self._records
        await records.run(batch_store.write(records.keys, batch, records.settings.job_ttl_s))

    async def _fail(self, batch: ApiBatch, errors: list[LineErrorInfo]) -> ApiBatch:
        update = {"state": "failed", "errors": errors, "failed_ms": now_ms()}
        failed = batch.model_copy(update=update)
        await self._save(failed)
        return failed

    async def _submit(self, batch: ApiBatch, lines: list[str]) -> ApiBatch:
        """Check and submit the lines as genq's batch `batch.batch_id`; the batch failed, with
        each line's reason, when any is invalid."""
        errors = await self._validate(lines, batch.endpoint)
        if errors:
            return await self._fail(batch, errors)
        try:
            await self._client.submit_batch(
                lines, batch_id=batch.batch_id, expires_in=batch.window_s, tenant=batch.tenant
            )
        except InvalidBatch as exc:
            return await self._fail(batch, _rejects(exc))
        except QuotaExceeded:  # refused before anything was queued: a retry makes it anew
            records = self._records
            await records.run(batch_store.forget(records.keys, batch))
            raise
        except GenqError as exc:  # nothing or part submitted: reported, and the batch failed
            error = LineErrorInfo(code="submission_failed", message=str(exc))
            await self._fail(batch, [error])
            raise
        submitted = batch.model_copy(update={"state": "submitted", "submitted_ms": now_ms()})
        await self._save(submitted)
        return submitted

    # -- reading a batch -----------------------------------------------------------------

    async def _genq_status(self, batch: ApiBatch) -> BatchStatus | None:
        """genq's counts of a submitted batch (None before); 404 once genq keeps it no more."""
        if batch.state != "submitted":
            return None
        try:
            return await (await self._client.batch(batch.batch_id)).status()
        except InvalidJob:  # its retention passed before the gateway's record's did
            raise not_found(batch.batch_id) from None

    async def describe(self, batch: ApiBatch) -> dict[str, Any]:
        """The batch object; writes the output and error files first when the batch has
        ended."""
        status = await self._genq_status(batch)
        if status is not None and status.complete and not batch.files_written:
            batch = await self._write_files(batch)
        return batch_object(batch, status)

    async def find(self, batch_id: str, principal: Principal) -> ApiBatch:
        """The gateway's record of a batch; 404 when there is none the principal sees."""
        if not _BATCH_ID.fullmatch(batch_id):
            raise not_found(batch_id)
        batch = await self._records.run(batch_store.read(self._records.keys, batch_id))
        if batch is None or not principal.sees(batch.tenant):
            raise not_found(batch_id)
        return batch

    async def get(self, batch_id: str, principal: Principal) -> dict[str, Any]:
        return await self.describe(await self.find(batch_id, principal))

    async def page(self, principal: Principal, limit: int, after: str | None) -> dict[str, Any]:
        records = self._records
        since = now_ms() - records.settings.job_ttl_s * 1000
        tenant = None if principal.admin else principal.tenant
        page = batch_store.ids_page(records.keys, since, after, limit + 1, tenant)
        ids = await records.run(page)
        data = []
        for batch_id in ids[:limit]:
            try:
                data.append(await self.describe(await self.find(batch_id, principal)))
            except ApiError:  # its retention passed since the index was read
                continue
        return chunks.list_page(data, has_more=len(ids) > limit)

    async def cancel(self, batch_id: str, principal: Principal) -> dict[str, Any]:
        batch = await self.find(batch_id, principal)
        state = status_of(batch, await self._genq_status(batch))
        if state not in ("in_progress", "cancelling"):
            message = f"Cannot cancel a batch with status {state!r}"
            raise ApiError(409, message, code="batch_not_cancellable")
        if not batch.cancelling_ms:
            batch = batch.model_copy(update={"cancelling_ms": now_ms()})
            await self._save(batch)
        await (await self._client.batch(batch_id)).cancel()
        return await self.describe(batch)

    # -- output and error files ----------------------------------------------------------

    async def _lines(self, batch: ApiBatch) -> tuple[list[str], list[str]]:
        """The batch's output and error lines, in input order."""
        handle = await self._client.batch(batch.batch_id)
        outputs: list[str] = []
        errors: list[str] = []
        page: list[str] = []
        async for job_id in handle.job_ids():
            page.append(job_id)
            if len(page) == READ_PAGE:
                await self._read_lines(batch, page, (outputs, errors))
                page = []
        await self._read_lines(batch, page, (outputs, errors))
        return outputs, errors

    async def _read_lines(
        self, batch: ApiBatch, job_ids: list[str], into: tuple[list[str], list[str]]
    ) -> None:
        ids = [job_id for job_id in job_ids if is_job_id(job_id)]
        records = await self._records.run(job_store.read_many(self._records.keys, ids))
        for job_id, record in zip(ids, records, strict=True):
            ok, line = output_line(job_id, record, batch.endpoint)
            (into[0] if ok else into[1]).append(line)

    async def _write_file(self, batch: ApiBatch, file_id: str, kind: str, lines: list[str]) -> None:
        if not lines:
            return
        text = "".join(line + "\n" for line in lines)
        size, name = len(text.encode("utf-8")), f"{batch.batch_id}_{kind}.jsonl"
        file = StoredFile(file_id, size, now_ms(), name, "batch_output", batch.tenant)
        await self._files.store(file, text)

    async def _write_files(self, batch: ApiBatch) -> ApiBatch:
        """Write an ended batch's output and error files (two gateways that do it at once
        write the same files under the same ids)."""
        outputs, errors = await self._lines(batch)
        await self._write_file(batch, batch.output_file_id, "output", outputs)
        await self._write_file(batch, batch.error_file_id, "error", errors)
        update = {"files_written": True, "output_lines": len(outputs), "error_lines": len(errors)}
        written = batch.model_copy(update=update)
        await self._save(written)
        return written

"""File bytes in S3-compatible object storage (`BATCHGATE_BLOB_URL=s3://bucket/prefix`),
shared by every API and worker process on every host.

The endpoint and credentials come from the environment as for any AWS client
(`AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3` for MinIO, Ceph, R2 and the like;
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`). Memory stays constant
whatever the file size: an upload is sent as a multipart upload, up to PARTS_IN_FLIGHT
parts at a time while the next part fills (an object appears only when it completes, so
a reader never sees half a file, and an upload that fails is aborted); a download is
one streamed GET, seekable (validation and operation output pages seek) by starting a
new ranged GET where the reader seeks to.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import ClientError

from batchgate.core.errors import NotFoundError

PART_SIZE = 8 * 1024 * 1024  # S3 wants parts of at least 5 MiB, except the last
# parts sent at once, beside the one filling: the upload's memory is (1 + this) parts.
# Sent one at a time, a part's PUT stopped the reading of the client's body, and one
# stream was slower than the object store takes (bench/ingest.py --store postgres+s3)
PARTS_IN_FLIGHT = 2
READ_BUFFER = 1024 * 1024


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix) of `s3://bucket/prefix`."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "InvalidRange")


class _MultipartWriter:
    """Buffers one part; each full part is uploaded as it fills, on threads, up to
    PARTS_IN_FLIGHT at once (a write waits for the oldest when that many are in flight)."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int):
        self._client, self._bucket, self._key, self._part_size = client, bucket, key, part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._sending: deque[Future[dict[str, Any]]] = deque()
        self._parts: list[dict[str, Any]] = []
        self._senders: ThreadPoolExecutor | None = None
        self.size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= self._part_size:
            with memoryview(self._buffer) as view:
                part = bytes(view[: self._part_size])  # one copy, not a bytearray's and then bytes'
            del self._buffer[: self._part_size]
            self._send_part(part)

    def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
            self._upload_id = created["UploadId"]
            self._senders = ThreadPoolExecutor(PARTS_IN_FLIGHT, thread_name_prefix="batchgate-s3-part")
        assert self._senders is not None
        while len(self._sending) >= PARTS_IN_FLIGHT:
            self._parts.append(self._sending.popleft().result())  # raises the part's failure
        number = len(self._parts) + len(self._sending) + 1
        self._sending.append(self._senders.submit(self._upload_part, number, data))

    def _upload_part(self, number: int, data: bytes) -> dict[str, Any]:
        answer = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        return {"ETag": answer["ETag"], "PartNumber": number}

    def commit(self) -> None:
        if self._upload_id is None:  # smaller than a part: one PUT
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
            return
        if self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer.clear()
        while self._sending:
            self._parts.append(self._sending.popleft().result())
        self._stop_senders()
        self._client.complete_multipart_upload(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )

    def abort(self) -> None:
        if self._upload_id is not None:  # else nothing was sent
            for sending in self._sending:
                sending.cancel()
            wait(self._sending)  # parts still being sent, before the upload they belong to goes
            self._stop_senders()
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)

    def _stop_senders(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=False)  # every part is done here: nothing is left to wait for
            self._senders = None


class _ObjectReader(io.RawIOBase):
    """An object as a seekable raw stream: one GET from the position on, streamed; a seek
    drops it and the next read starts a ranged GET there."""

    def __init__(self, client: Any, bucket: str, key: str, size: int):
        self._client, self._bucket, self._key, self._size = client, bucket, key, size
        self._position = 0
        self._body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        position = max(base + offset, 0)
        if position != self._position:
            self._drop_body()
            self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._size or len(buffer) == 0:
            return 0
        if self._body is None:
            answer = self._client.get_object(Bucket=self._bucket, Key=self._key, Range=f"bytes={self._position}-")
            self._body = answer["Body"]
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()


class S3BlobStore:
    def __init__(self, url: str, client: Any = None, part_size: int = PART_SIZE):
        self.bucket, self.prefix = parse_s3_url(url)
        self._client = client or boto3.client("s3")
        self._part_size = part_size

    def _key(self, blob_id: str) -> str:
        if "/" in blob_id or blob_id.startswith("."):
            raise NotFoundError(f"No such file: {blob_id}")
        return self.prefix + blob_id

    @contextmanager
    def writer(self, blob_id: str) -> Iterator[_MultipartWriter]:
        writer = _MultipartWriter(self._client, self.bucket, self._key(blob_id), self._part_size)
        try:
            yield writer
            writer.commit()
        except BaseException:
            writer.abort()  # S3 keeps (and bills) the parts of an upload never completed or aborted
            raise

    def open(self, blob_id: str) -> BinaryIO:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(blob_id))
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"The content of file {blob_id} is missing.") from None
            raise
        raw = _ObjectReader(self._client, self.bucket, self._key(blob_id), int(head["ContentLength"]))
        return io.BufferedReader(raw, READ_BUFFER)

    def read_range(self, blob_id: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            answer = self._client.get_object(
                Bucket=self.bucket, Key=self._key(blob_id), Range=f"bytes={offset}-{offset + length - 1}"
            )
        except ClientError as exc:
            if _missing(exc):
                raise NotFoundError(f"The content of file {blob_id} is missing.") from None
            raise
        return bytes(answer["Body"].read())

    def delete(self, blob_id: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(blob_id))

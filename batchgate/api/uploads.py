"""Streaming multipart/form-data parsing for file uploads.

Starlette's form parser spools whole files before the handler sees them; here every
chunk goes from the socket to the blob store as it arrives, and the size limit is
enforced while streaming, so an oversize upload is refused without being buffered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from batchgate.core.errors import InvalidRequestError, PayloadTooLargeError
from batchgate.core.files import Upload

MAX_FIELD_BYTES = 64 * 1024
MAX_FILENAME_CHARS = 255


@dataclass
class _State:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)
    fields: dict[str, str] = field(default_factory=dict)
    file_name: str | None = None
    saw_file: bool = False
    ended: bool = False  # the closing boundary arrived


async def receive_upload(request: Request, upload: Upload, max_bytes: int) -> dict[str, str]:
    """Stream the multipart body: the part named `file` into `upload`; returns the other
    fields, plus `filename` if the file part had one."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise InvalidRequestError(
            "Uploads must be multipart/form-data with a 'file' part and a 'purpose' field.",
            param="file",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + MAX_FIELD_BYTES:
        raise PayloadTooLargeError(
            f"The upload is {int(declared)} bytes; files are limited to {max_bytes} bytes.",
            param="file",
            code="file_too_large",
        )
    state = _State()

    def on_part_begin() -> None:
        state.headers, state.name, state.filename, state.value = {}, "", None, bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        state.headers[state.header_field.lower()] = state.header_value
        state.header_field, state.header_value = b"", b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(state.headers.get(b"content-disposition", b""))
        state.name = options.get(b"name", b"").decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        state.filename = raw_filename.decode("utf-8", "replace") if raw_filename is not None else None
        if state.name == "file":
            if state.saw_file:
                raise InvalidRequestError("Send exactly one 'file' part per upload.", param="file")
            if state.filename is not None and len(state.filename) > MAX_FILENAME_CHARS:
                raise InvalidRequestError(
                    f"The file name is longer than {MAX_FILENAME_CHARS} characters.", param="file"
                )
            state.saw_file = True
            state.file_name = state.filename

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.name == "file":
            upload.write(data[start:end])
        else:
            state.value += data[start:end]
            if len(state.value) > MAX_FIELD_BYTES:
                raise InvalidRequestError(f"Form field {state.name!r} is too long.", param=state.name)

    def on_part_end() -> None:
        if state.name != "file":
            state.fields[state.name] = state.value.decode("utf-8", "replace")

    def on_end() -> None:
        state.ended = True

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        # a body that does not match its boundary, or a part header over the parser's
        # bounds (4 KB a header line, 8 headers: a huge filename ends here)
        raise InvalidRequestError(f"The upload is not valid multipart/form-data: {exc}.", param="file") from None
    if not state.ended:
        # a body cut short (a dropped proxy connection, a client killed mid-send) would
        # otherwise be kept as a complete file with its last lines missing
        raise InvalidRequestError(
            "The upload ended before the multipart body's closing boundary: the file is incomplete.",
            param="file",
        )
    if not state.saw_file:
        raise InvalidRequestError("Missing required parameter 'file'.", param="file", code="missing_required_parameter")
    if state.file_name:
        state.fields["filename"] = state.file_name
    return state.fields

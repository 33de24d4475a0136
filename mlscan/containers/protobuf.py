"""A minimal protobuf wire-format reader (no generated code, no TensorFlow/ONNX imports).

Messages are addressed as (buffer, start, end) spans so large payloads (tensor bytes) are
skipped, never copied. Truncated or impossible encodings raise MalformedError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

from mlscan.errors import MalformedError

Buffer = Union[bytes, bytearray, memoryview]

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    value: int
    """The integer for VARINT/I64/I32 fields; unused (0) for LEN fields."""
    start: int
    """Payload start (LEN) or the field's own offset."""
    end: int


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise MalformedError("truncated protobuf varint", offset=pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MalformedError("protobuf varint longer than 10 bytes", offset=pos)


def fields(buf: Buffer, start: int = 0, end: int | None = None) -> Iterator[Field]:
    """Top-level fields of the message in buf[start:end]."""
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        here = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MalformedError("protobuf field number 0", offset=here)
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield Field(number, wire, value, here, pos)
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise MalformedError(f"protobuf field {number} claims {length} bytes, only "
                                     f"{end - pos} remain", offset=here)
            yield Field(number, wire, 0, pos, pos + length)
            pos += length
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            if pos + size > end:
                raise MalformedError("truncated protobuf fixed-width field", offset=here)
            value = int.from_bytes(bytes(buf[pos:pos + size]), "little")
            yield Field(number, wire, value, here, pos + size)
            pos += size
        elif wire == SGROUP:
            pos = _skip_group(buf, pos, end, number)
        else:
            raise MalformedError(f"invalid protobuf wire type {wire}", offset=here)


def _skip_group(buf: Buffer, pos: int, end: int, number: int, depth: int = 0) -> int:
    if depth > 64:
        raise MalformedError("protobuf groups nested too deeply", offset=pos)
    while pos < end:
        here = pos
        key, pos = read_varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if wire == EGROUP:
            if num != number:
                raise MalformedError("mismatched protobuf end-group", offset=here)
            return pos
        if wire == VARINT:
            _, pos = read_varint(buf, pos, end)
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end)
            pos += length
        elif wire == I64:
            pos += 8
        elif wire == I32:
            pos += 4
        elif wire == SGROUP:
            pos = _skip_group(buf, pos, end, num, depth + 1)
        else:
            raise MalformedError(f"invalid protobuf wire type {wire}", offset=here)
    raise MalformedError("unterminated protobuf group", offset=pos)


def text(buf: Buffer, f: Field, limit: int = 1 << 20) -> str:
    """A LEN field as text (lossless for UTF-8, escaped otherwise), capped at `limit` bytes."""
    raw = bytes(buf[f.start:min(f.end, f.start + limit)])
    return raw.decode("utf-8", errors="backslashreplace")


def by_number(buf: Buffer, start: int, end: int, number: int) -> Iterator[Field]:
    for f in fields(buf, start, end):
        if f.number == number and f.wire == LEN:
            yield f


def first_text(buf: Buffer, start: int, end: int, number: int) -> str | None:
    for f in by_number(buf, start, end, number):
        return text(buf, f)
    return None


# --- writing: used by the fixture generator and tests (we build our own samples) ---

def enc_varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_field(number: int, value: int | bytes | str) -> bytes:
    """Encode one field: int -> varint, bytes/str -> length-delimited."""
    if isinstance(value, int):
        return enc_varint(number << 3 | VARINT) + enc_varint(value)
    data = value.encode("utf-8") if isinstance(value, str) else value
    return enc_varint(number << 3 | LEN) + enc_varint(len(data)) + data

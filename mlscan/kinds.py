"""Detect what a file is from its first bytes (and name only where content cannot tell)."""

from __future__ import annotations

import enum
import struct
from typing import BinaryIO

from mlscan.picklevm.sniff import decodes_as_pickle

HEAD_SIZE = 512


class Kind(str, enum.Enum):
    PICKLE = "pickle"
    ZIP = "zip"
    TAR = "tar"
    SEVENZ = "7z"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    LZMA = "lzma"
    ZLIB = "zlib"
    NUMPY = "numpy"
    HDF5 = "hdf5"
    SAFETENSORS = "safetensors"
    GGUF = "gguf"
    ONNX = "onnx"
    TF_SAVEDMODEL = "tf-savedmodel"
    PYTHON = "python"
    NOTEBOOK = "notebook"
    JSON = "json"
    YAML = "yaml"
    JINJA = "jinja"
    UNKNOWN = "unknown"


# Extensions that promise a model artifact: unrecognized content there is reported.
MODEL_EXTENSIONS = frozenset(
    {
        ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz", ".safetensors",
        ".h5", ".hdf5", ".keras", ".onnx", ".gguf", ".pb", ".mar", ".distcp", ".dill",
        ".sav", ".model",
    }
)
# Extensions that claim data-only formats: a pickle behind them is a disguise.
DATA_ONLY_EXTENSIONS = frozenset(
    {
        ".safetensors", ".gguf", ".onnx", ".json", ".txt", ".csv", ".png", ".jpg", ".jpeg",
        ".gif", ".md", ".h5", ".hdf5", ".yaml", ".yml", ".msgpack", ".tflite", ".wav",
    }
)
CODE_EXTENSIONS = {".py": Kind.PYTHON, ".pyw": Kind.PYTHON, ".ipynb": Kind.NOTEBOOK}
TEXT_EXTENSIONS = {
    ".json": Kind.JSON, ".yaml": Kind.YAML, ".yml": Kind.YAML, ".jinja": Kind.JINJA,
    ".jinja2": Kind.JINJA, ".j2": Kind.JINJA,
}

def looks_like_pickle(head: bytes, complete: bool | None = None) -> bool:
    """`complete`: `head` is the whole stream (default: when shorter than HEAD_SIZE)."""
    whole = len(head) < HEAD_SIZE if complete is None else complete
    if len(head) >= 2 and head[0] == 0x80:
        return head[1] <= 5 and decodes_as_pickle(head, min_ops=4, complete=whole)
    return decodes_as_pickle(head, complete=whole)


def sniff_bytes(head: bytes) -> Kind:
    """Kind from content alone; UNKNOWN when the bytes say nothing."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return Kind.ZIP
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return Kind.SEVENZ
    if head.startswith(b"\x1f\x8b"):
        return Kind.GZIP
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return Kind.BZIP2
    if head.startswith(b"\xfd7zXZ\x00"):
        return Kind.XZ
    if head.startswith(b"\x93NUMPY"):
        return Kind.NUMPY
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return Kind.HDF5
    if head.startswith(b"GGUF"):
        return Kind.GGUF
    if len(head) >= 262 and head[257:262] == b"ustar":
        return Kind.TAR
    if head[8:10] == b'{"' and _looks_like_safetensors(head):
        # Before pickle: a header length such as 0x010280 starts with b'\x80\x02'. The
        # safetensors analyzer still runs the pickle analysis on such files (polyglots).
        return Kind.SAFETENSORS
    if looks_like_pickle(head):
        return Kind.PICKLE
    if len(head) >= 2 and head[0] == 0x78 and head[1] in (0x01, 0x5E, 0x9C, 0xDA):
        return Kind.ZLIB  # joblib's zlib compression writes a bare zlib stream
    if len(head) >= 13 and head[0] == 0x5D and head[1:5] in (
        b"\x00\x00\x80\x00", b"\x00\x00\x01\x00", b"\x00\x00\x10\x00", b"\x00\x00\x00\x01",
        b"\x00\x00\x00\x04", b"\x00\x00\x00\x02", b"\x00\x00\x40\x00", b"\x00\x00\x00\x08",
    ):
        return Kind.LZMA
    if _looks_like_safetensors(head):
        return Kind.SAFETENSORS
    proto = _looks_like_protobuf_model(head)
    if proto is not None:
        return proto
    return Kind.UNKNOWN


def _looks_like_protobuf_model(head: bytes) -> Kind | None:
    """ONNX ModelProto starts with ir_version (field 1, 3..15) and then a string/graph field;
    a SavedModel with schema version 1 followed by meta_graphs."""
    if len(head) < 3 or head[0] != 0x08:
        return None
    if head[1] == 0x01 and head[2] == 0x12:
        return Kind.TF_SAVEDMODEL
    if 3 <= head[1] <= 15 and head[2] in (0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42):
        return Kind.ONNX
    return None


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n < 100 * 1024 * 1024 and head[8:9] == b"{"


def sniff(head: bytes, name: str) -> Kind:
    """Kind of a file: content first; the name only for text formats content cannot prove."""
    kind = sniff_bytes(head)
    if kind is not Kind.UNKNOWN:
        return kind
    lower = name.lower()
    dot = lower.rfind(".")
    ext = lower[dot:] if dot >= 0 else ""
    if ext in CODE_EXTENSIONS:
        return CODE_EXTENSIONS[ext]
    if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
        return Kind.PYTHON
    if ext in TEXT_EXTENSIONS:
        return TEXT_EXTENSIONS[ext]
    if ext == ".onnx":
        return Kind.ONNX
    if ext == ".pb":  # saved_model.pb, keras_metadata.pb, frozen graphs, fingerprint.pb
        return Kind.TF_SAVEDMODEL
    return Kind.UNKNOWN


def extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower()
    dot = base.rfind(".")
    return base[dot:] if dot > 0 else ""


def trailing_zip(stream: BinaryIO) -> Kind:
    """Zip readers (torch.load included) find the central directory at the end, so junk
    before the first entry does not stop them; it must not stop us either. The stream's
    position is restored."""
    pos = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(max(pos, end - 65_557))
    tail = stream.read()
    stream.seek(pos)
    return Kind.ZIP if end - pos > 22 and b"PK\x05\x06" in tail else Kind.UNKNOWN

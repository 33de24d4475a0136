"""Container readers: lenient where loaders are lenient, and every trick is reported."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
import zlib

from mlscan.analyzers.base import Source, scan_source
from mlscan.context import Budget, Settings
from mlscan.model import Finding

PAYLOAD = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."


def scan(data: bytes, name: str) -> list[Finding]:
    src = Source(stream=io.BytesIO(data), path=name, name=name, size=len(data))
    return list(scan_source(src, Budget(Settings())))


def codes(found: list[Finding]) -> set[str]:
    return {f.rule_id for f in found}


def torch_zip(pkl: bytes, folder: str = "archive", method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr(f"{folder}/data.pkl", pkl)
        z.writestr(f"{folder}/data/0", b"\x80\x02" + bytes(62))  # tensor bytes that look odd
        z.writestr(f"{folder}/version", "3\n")
    return buf.getvalue()


def test_concatenated_gzip_members_are_read_to_the_end() -> None:
    benign = pickle.dumps({"a": 1}, protocol=2)
    data = gzip.compress(b"", mtime=0) + gzip.compress(benign, mtime=0)
    assert scan(data, "x.pkl.gz") == []
    data = gzip.compress(benign[:10], mtime=0) + gzip.compress(benign[10:], mtime=0)
    assert scan(data, "x.pkl.gz") == []


def test_bare_zlib_stream_like_joblib_is_unwrapped() -> None:
    found = scan(zlib.compress(PAYLOAD), "model.joblib")
    assert {f.evidence for f in found if f.rule_id == "MLS201"} == {"posix.system"}
    assert {f.member for f in found} == {"model.joblib<zlib>"}


def test_payload_in_any_inner_folder_and_deflated_member_is_found() -> None:
    found = scan(torch_zip(PAYLOAD, "not_archive", zipfile.ZIP_DEFLATED), "m.pt")
    assert [f.member for f in found if f.rule_id == "MLS201"] == ["not_archive/data.pkl"]


def test_tensor_bytes_that_look_like_a_pickle_are_not_errors() -> None:
    assert scan(torch_zip(pickle.dumps({"w": 1}, protocol=2)), "m.pt") == []


def test_junk_before_the_zip_is_tolerated_and_reported() -> None:
    found = scan(b"JUNK" * 100 + torch_zip(PAYLOAD), "m.pt")
    assert "MLS201" in codes(found)
    assert any("before the first entry" in f.message for f in found if f.rule_id == "MLS210")


def _patch_local_name(data: bytes, old: bytes, new: bytes) -> bytes:
    at = data.index(b"PK\x03\x04" + data[data.index(b"PK\x03\x04") + 4:][:26])
    assert len(old) == len(new)
    head = data[at:at + 30 + len(old)]
    return data[:at] + head.replace(old, new) + data[at + 30 + len(old):]


def test_local_header_name_differing_from_central_directory_is_read_and_reported() -> None:
    data = torch_zip(PAYLOAD)
    data = _patch_local_name(data, b"archive/data.pkl", b"archive/DATA.pkl")
    found = scan(data, "m.pt")
    assert "MLS201" in codes(found)
    assert any("local header names" in f.message for f in found)


def test_bad_crc_and_encrypted_flag_do_not_stop_the_scan() -> None:
    data = bytearray(torch_zip(PAYLOAD))
    cd = data.index(b"PK\x01\x02")
    struct.pack_into("<H", data, cd + 8, 0x1)  # general purpose flag: encrypted
    struct.pack_into("<I", data, cd + 16, 0xDEADBEEF)  # CRC in the central directory
    found = scan(bytes(data), "m.pt")
    assert "MLS201" in codes(found)
    messages = " ".join(f.message for f in found if f.rule_id == "MLS210")
    assert "encrypted flag" in messages and "CRC" in messages


def test_truncated_zip_recovers_entries_from_local_headers() -> None:
    data = torch_zip(PAYLOAD)
    found = scan(data[: data.index(b"PK\x01\x02")], "m.pt")
    assert "MLS201" in codes(found)


def test_object_npy_is_scanned_as_a_pickle() -> None:
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - len(header) % 64) + b"\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + PAYLOAD
    assert "MLS201" in codes(scan(data, "a.npy"))
    plain = data.replace(b"|O", b"<f")
    assert scan(plain[: plain.index(PAYLOAD)] + bytes(8), "a.npy") == []


def test_zip_inside_zip_is_scanned_with_the_member_chain() -> None:
    inner = torch_zip(PAYLOAD)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("models/inner.pt", inner)
    found = scan(buf.getvalue(), "outer.zip")
    assert [f.member for f in found if f.rule_id == "MLS201"] == [
        "models/inner.pt!archive/data.pkl"]

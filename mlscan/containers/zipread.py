"""A zip reader as lenient as the loaders (torch's miniz reader, numpy, Keras).

Python's `zipfile` refuses archives that `torch.load` still executes (bad CRC, odd flag bits,
local/central name mismatch); scanners built on it were bypassed that way. This reader trusts
the central directory like the loaders do, reads data at the local header's offset, never
checks CRCs before reading, and records every anomaly for the report.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from mlscan.containers.streams import DecompressingReader, SubFile
from mlscan.context import Budget
from mlscan.errors import MalformedError

_EOCD = b"PK\x05\x06"
_EOCD64_LOC = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CDH = b"PK\x01\x02"
_LFH = b"PK\x03\x04"
_MAX_COMMENT = 65_535


@dataclass
class ZipEntry:
    name: str
    method: int
    flags: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    """Offset of the local file header (already corrected for a junk prefix)."""
    data_offset: int = -1
    local_name: str | None = None


@dataclass
class ZipListing:
    entries: list[ZipEntry]
    anomalies: list[str] = field(default_factory=list)


def _decode_name(raw: bytes, flags: int) -> str:
    if flags & 0x800:
        return raw.decode("utf-8", "backslashreplace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp437")


class ZipReader:
    def __init__(self, stream: BinaryIO, size: int, budget: Budget) -> None:
        self.f = stream
        self.size = size
        self.budget = budget

    # -- listing -----------------------------------------------------------------------
    def listing(self) -> ZipListing:
        try:
            listing = self._from_central_directory()
        except MalformedError as exc:
            listing = self._from_local_headers()
            listing.anomalies.insert(0, f"central directory unusable ({exc.message}); "
                                     "entries recovered from local headers")
        self._check(listing)
        return listing

    def _read_at(self, offset: int, n: int) -> bytes:
        if offset < 0 or offset > self.size:
            raise MalformedError(f"offset {offset} outside the file", offset)
        self.f.seek(offset)
        return self.f.read(n)

    def _from_central_directory(self) -> ZipListing:
        tail_start = max(0, self.size - (22 + _MAX_COMMENT))
        tail = self._read_at(tail_start, self.size - tail_start)
        pos = tail.rfind(_EOCD)
        if pos < 0 or len(tail) - pos < 22:
            raise MalformedError("no end-of-central-directory record")
        eocd_at = tail_start + pos
        (_, _, _, count, cd_size, cd_offset, _) = struct.unpack("<HHHHIIH", tail[pos + 4:pos + 22])
        anomalies: list[str] = []
        has_locator = eocd_at >= 20 and self._read_at(eocd_at - 20, 4) == _EOCD64_LOC
        if has_locator or count == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
            # the zip64 records sit between the central directory and the end record
            count, cd_size, cd_offset, eocd_at = self._zip64(eocd_at)
        cd_start = eocd_at - cd_size
        prefix = cd_start - cd_offset
        if prefix < 0:
            raise MalformedError("central directory offset points past its own location")
        if prefix > 0:
            anomalies.append(f"{prefix} bytes of data before the first entry")
        if cd_size > 64 * 1024 * 1024:
            raise MalformedError("central directory larger than 64 MiB")
        cd = self._read_at(cd_start, cd_size)
        entries: list[ZipEntry] = []
        p = 0
        while p + 46 <= len(cd) and cd[p:p + 4] == _CDH:
            (_, _, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, _, _, _,
             hoff) = struct.unpack("<HHHHHHIIIHHHHHII", cd[p + 4:p + 46])
            name_raw = cd[p + 46:p + 46 + nlen]
            extra = cd[p + 46 + nlen:p + 46 + nlen + xlen]
            usize, csize, hoff = _zip64_extra(extra, usize, csize, hoff)
            entries.append(ZipEntry(_decode_name(name_raw, flags), method, flags, crc, csize,
                                    usize, hoff + prefix))
            p += 46 + nlen + xlen + clen
            if len(entries) > self.budget.limits.max_members:
                raise MalformedError(f"more than {self.budget.limits.max_members} entries")
        if not entries and count:
            raise MalformedError("central directory holds no readable entries")
        if len(entries) != count and count != 0xFFFF:
            anomalies.append(f"end record announces {count} entries, central directory "
                             f"holds {len(entries)}")
        return ZipListing(entries, anomalies)

    def _zip64(self, eocd_at: int) -> tuple[int, int, int, int]:
        loc = self._read_at(eocd_at - 20, 20)
        if len(loc) < 20 or loc[:4] != _EOCD64_LOC:
            raise MalformedError("zip64 locator missing")
        (rec_off,) = struct.unpack("<Q", loc[8:16])
        rec_at = eocd_at - 20 - 56  # where it must be; trust position over the stored offset
        rec = self._read_at(rec_at, 56)
        if rec[:4] != _EOCD64:
            rec_at = rec_off
            rec = self._read_at(rec_off, 56)
            if rec[:4] != _EOCD64:
                raise MalformedError("zip64 end record missing")
        (count, cd_size, cd_offset) = struct.unpack("<QQQ", rec[32:56])
        return count, cd_size, cd_offset, rec_at

    def _from_local_headers(self) -> ZipListing:
        """Walk local headers from the start (truncated archives, missing directory)."""
        entries: list[ZipEntry] = []
        offset = 0
        self.f.seek(0)
        head = self.f.read(4)
        if head != _LFH:
            raise MalformedError("not a zip archive: no central directory and no local header")
        while offset + 30 <= self.size and len(entries) < self.budget.limits.max_members:
            self.budget.check_time()
            hdr = self._read_at(offset, 30)
            if hdr[:4] != _LFH:
                break
            (_, flags, method, _, _, crc, csize, usize, nlen, xlen) = struct.unpack(
                "<HHHHHIIIHH", hdr[4:30])
            name = _decode_name(self._read_at(offset + 30, nlen), flags)
            data_at = offset + 30 + nlen + xlen
            if csize == 0 and flags & 0x8 and method == 8:
                csize = self._deflate_length(data_at)
            elif csize == 0 and flags & 0x8:
                break  # stored entry of unknown length: cannot find its end reliably
            entry = ZipEntry(name, method, flags, crc, csize, usize, offset, data_at, name)
            entries.append(entry)
            offset = data_at + csize + (16 if flags & 0x8 else 0)
        if not entries:
            raise MalformedError("no readable zip entries")
        return ZipListing(entries, [])

    def _deflate_length(self, start: int) -> int:
        dec = zlib.decompressobj(-15)
        self.f.seek(start)
        consumed = 0
        while not dec.eof:
            chunk = self.f.read(1 << 16)
            if not chunk:
                break
            dec.decompress(chunk, 1 << 16)
            while dec.unconsumed_tail and not dec.eof:
                dec.decompress(dec.unconsumed_tail, 1 << 16)
            consumed += len(chunk)
        return consumed - len(dec.unused_data)

    # -- checks and member access --------------------------------------------------------
    def _check(self, listing: ZipListing) -> None:
        names: dict[str, int] = {}
        offsets: dict[int, str] = {}
        for e in listing.entries:
            names[e.name] = names.get(e.name, 0) + 1
            if e.header_offset in offsets and offsets[e.header_offset] != e.name:
                listing.anomalies.append(f"entries {offsets[e.header_offset]!r} and {e.name!r} "
                                         "share the same data (overlapping entries)")
            offsets.setdefault(e.header_offset, e.name)
            if e.flags & 0x1:
                listing.anomalies.append(f"{e.name!r} has the encrypted flag set but is read "
                                         "as plain data by loaders")
            if e.data_offset < 0:
                try:
                    self._locate(e, listing)
                except MalformedError as exc:
                    listing.anomalies.append(exc.message)
        for name, n in names.items():
            if n > 1:
                listing.anomalies.append(f"{n} entries named {name!r} (a loader picks one, a "
                                         "scanner may read another)")

    def _locate(self, e: ZipEntry, listing: ZipListing) -> None:
        hdr = self._read_at(e.header_offset, 30)
        if len(hdr) < 30 or hdr[:4] != _LFH:
            raise MalformedError(f"local header of {e.name!r} missing at {e.header_offset}",
                                 e.header_offset)
        nlen, xlen = struct.unpack("<HH", hdr[26:30])
        local = _decode_name(self._read_at(e.header_offset + 30, nlen), e.flags)
        e.local_name = local
        e.data_offset = e.header_offset + 30 + nlen + xlen
        if local != e.name:
            listing.anomalies.append(f"local header names {local!r} but the central directory "
                                     f"names {e.name!r}")

    def open(self, e: ZipEntry) -> BinaryIO:
        if e.data_offset < 0:
            raise MalformedError(f"{e.name!r} has no local header")
        if e.data_offset + e.csize > self.size:
            raise MalformedError(f"{e.name!r} extends past the end of the archive",
                                 e.data_offset)
        raw = SubFile(self.f, e.data_offset, e.csize)
        import io

        if e.method == 0:
            return io.BufferedReader(raw, 1 << 16)
        if e.method == 8:
            dec = DecompressingReader(raw, lambda: zlib.decompressobj(-15),
                                      self.budget, "deflate", e.csize)
            return io.BufferedReader(dec, 1 << 16)
        if e.method == 12:
            import bz2

            dec = DecompressingReader(raw, bz2.BZ2Decompressor,
                                      self.budget, "bzip2", e.csize)
            return io.BufferedReader(dec, 1 << 16)
        raise MalformedError(f"{e.name!r} uses unsupported compression method {e.method}")

    def crc_matches(self, e: ZipEntry, limit: int = 16 * 1024 * 1024) -> bool | None:
        """CRC check for small entries (None when too large to check cheaply)."""
        if e.usize > limit or e.csize > limit:
            return None
        stream = self.open(e)
        crc = 0
        while True:
            chunk = stream.read(1 << 16)
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
        return crc == e.crc


def _zip64_extra(extra: bytes, usize: int, csize: int, hoff: int) -> tuple[int, int, int]:
    p = 0
    while p + 4 <= len(extra):
        tag, size = struct.unpack("<HH", extra[p:p + 4])
        body = extra[p + 4:p + 4 + size]
        if tag == 0x0001:
            q = 0
            if usize == 0xFFFFFFFF and q + 8 <= len(body):
                (usize,) = struct.unpack("<Q", body[q:q + 8])
                q += 8
            if csize == 0xFFFFFFFF and q + 8 <= len(body):
                (csize,) = struct.unpack("<Q", body[q:q + 8])
                q += 8
            if hoff == 0xFFFFFFFF and q + 8 <= len(body):
                (hoff,) = struct.unpack("<Q", body[q:q + 8])
        p += 4 + size
    return usize, csize, hoff


def iter_entries(listing: ZipListing) -> Iterator[ZipEntry]:
    """Each distinct entry once (overlapping duplicates share one scan)."""
    seen: set[tuple[int, str]] = set()
    for e in listing.entries:
        key = (e.header_offset, e.name)
        if key not in seen:
            seen.add(key)
            yield e

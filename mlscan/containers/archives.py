"""Zip (PyTorch, npz, Keras), tar (legacy PyTorch) and 7z archives: every member is sniffed
and scanned whatever its name; structural tricks are findings of their own."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from typing import Any, cast

from mlscan.analyzers.base import Source, register, scan_source
from mlscan.containers.streams import SubFile
from mlscan.containers.zipread import ZipReader, iter_entries
from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import HEAD_SIZE, Kind, sniff
from mlscan.model import Finding
from mlscan.rulesets.meta import MALFORMED
from mlscan.rulesets.model_files import CONTAINER_EVASION

SEVENZ_MAX_BYTES = 256 * 1024 * 1024
# Raw tensor storages in torch archives: random bytes that may sniff as anything.
_RAW_DATA_MEMBER = re.compile(r"(^|/)(data|\.data)/\d+$|(^|/)\d+$")


def _is_raw_data(name: str) -> bool:
    return bool(_RAW_DATA_MEMBER.search(name))


def _scan_member(parent: Source, stream: io.BufferedIOBase, name: str, size: int | None,
                 budget: Budget) -> tuple[Kind, list[Finding]]:
    child = parent.child(stream, name, size)  # type: ignore[arg-type]
    kind = sniff(child.head(HEAD_SIZE), name)
    found = list(scan_source(child, budget, kind))
    if _is_raw_data(name):
        # tensor bytes that happen to look like a pickle are not a parse failure
        found = [f for f in found if f.rule_id != MALFORMED.code]
    return kind, found


def _size_of(src: Source) -> int:
    if src.size is not None:
        return src.size
    pos = src.stream.tell()
    end = src.stream.seek(0, 2)
    src.stream.seek(pos)
    return end


def _spooled(src: Source, budget: Budget) -> Source:
    """Zip and 7z need random access: copy an unseekable member stream to a spool file."""
    if src.stream.seekable():
        return src
    import tempfile

    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
    total = 0
    while True:
        chunk = src.stream.read(1 << 20)
        if not chunk:
            break
        total += len(chunk)
        if total > budget.limits.max_decompressed_bytes:
            raise LimitExceeded("nested archive larger than the decompression limit")
        spool.write(chunk)
    spool.seek(0)
    from dataclasses import replace

    return replace(src, stream=spool, size=total)  # type: ignore[arg-type]


def _spool_copy(member: Any, size: int, budget: Budget) -> io.BufferedIOBase:
    import tempfile

    if size > budget.limits.max_decompressed_bytes:
        raise LimitExceeded(f"tar member of {size} bytes exceeds the decompression limit")
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
    remaining = size
    while remaining > 0:
        chunk = member.read(min(remaining, 1 << 20))
        if not chunk:
            break
        spool.write(chunk)
        remaining -= len(chunk)
        budget.check_time()
    spool.seek(0)
    return cast(io.BufferedIOBase, spool)


@register(Kind.ZIP)
def analyze_zip(src: Source, budget: Budget) -> Iterator[Finding]:
    src = _spooled(src, budget)
    reader = ZipReader(src.stream, _size_of(src), budget)
    listing = reader.listing()
    for note in listing.anomalies:
        yield CONTAINER_EVASION.finding(src.path, f"{src.name}: {note}", member=src.member,
                                        evidence=note)
    for entry in iter_entries(listing):
        budget.check_time()
        if entry.name.endswith("/") and entry.usize == 0:
            continue
        try:
            stream = reader.open(entry)
            kind, found = _scan_member(src, stream, entry.name, entry.usize, budget)  # type: ignore[arg-type]
        except MalformedError as exc:
            member = entry.name if src.member is None else f"{src.member}!{entry.name}"
            yield MALFORMED.finding(src.path, f"{entry.name}: {exc.message}", member=member,
                                    offset=entry.header_offset, evidence=exc.message)
            continue
        yield from found
        if kind is Kind.PICKLE and entry.method in (0, 8):
            ok = reader.crc_matches(entry)
            if ok is False:
                yield CONTAINER_EVASION.finding(
                    src.path, f"{src.name}: CRC of {entry.name!r} does not match its data "
                    "(strict readers refuse it, torch.load does not)", member=src.member,
                    evidence=f"bad CRC {entry.name}")


@register(Kind.TAR)
def analyze_tar(src: Source, budget: Budget) -> Iterator[Finding]:
    try:
        tf = tarfile.open(fileobj=src.stream, mode="r:" if src.stream.seekable() else "r|")
    except tarfile.TarError as exc:
        raise MalformedError(f"unreadable tar archive: {exc}") from None
    count = 0
    with tf:
        while True:
            budget.check_time()
            try:
                info = tf.next()
            except tarfile.TarError as exc:
                raise MalformedError(f"tar archive breaks after {count} members: {exc}") from None
            if info is None:
                break
            count += 1
            if count > budget.limits.max_members:
                raise LimitExceeded(f"more than {budget.limits.max_members} tar members")
            if not info.isfile():
                continue
            member = tf.extractfile(info)
            if member is None:
                continue
            if src.stream.seekable():  # a window onto the file: no copy, no tensor reads
                stream = cast(io.BufferedIOBase, io.BufferedReader(
                    SubFile(src.stream, info.offset_data, info.size)))
            else:  # stream-mode members cannot seek: copy each (bounded) to a spool file
                stream = _spool_copy(member, info.size, budget)
            _, found = _scan_member(src, stream, info.name, info.size, budget)
            yield from found


@register(Kind.SEVENZ)
def analyze_7z(src: Source, budget: Budget) -> Iterator[Finding]:
    try:
        import py7zr
    except ImportError:
        yield CONTAINER_EVASION.finding(
            src.path, f"{src.name}: 7z archive could not be inspected (py7zr is not installed); "
            "models packed with 7z evade most scanners", member=src.member, evidence="7z")
        return
    src = _spooled(src, budget)
    try:
        archive = py7zr.SevenZipFile(src.stream, mode="r")
        infos = [i for i in archive.list() if not i.is_directory]
    except Exception as exc:  # noqa: BLE001 - py7zr raises many exception types
        raise MalformedError(f"unreadable 7z archive: {exc}") from None
    total = sum(int(i.uncompressed or 0) for i in infos)
    if total > SEVENZ_MAX_BYTES or total > budget.limits.max_decompressed_bytes:
        raise LimitExceeded(f"7z archive expands to {total} bytes; larger than "
                            f"{SEVENZ_MAX_BYTES // (1024 * 1024)} MiB is not inspected")
    budget.add_decompressed(total)
    try:
        with archive:
            contents = _read_7z(archive)
    except Exception as exc:  # noqa: BLE001
        raise MalformedError(f"7z archive could not be decompressed: {exc}") from None
    risky = False
    for name, data in contents.items():
        kind, found = _scan_member(src, io.BytesIO(data), name, len(data), budget)
        risky = risky or kind in (Kind.PICKLE, Kind.ZIP, Kind.TAR)
        yield from found
    if risky:
        yield CONTAINER_EVASION.finding(
            src.path, f"{src.name}: pickle-based model packed with 7z (the 'nullifAI' evasion: "
            "scanners that only read zip miss it)", member=src.member, evidence="7z model")


def _read_7z(archive: Any) -> dict[str, bytes]:
    """Read every member into memory (total size was bounded by the caller); py7zr's
    in-memory writer caps each member again, so lying headers cannot grow it."""
    from py7zr.io import BytesIOFactory

    factory = BytesIOFactory(SEVENZ_MAX_BYTES)
    archive.extractall(factory=factory)
    out: dict[str, bytes] = {}
    for name, product in factory.products.items():
        product.seek(0)
        out[name] = product.read()
    return out

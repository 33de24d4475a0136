"""`mlscan explain FILE`: what each pickle in a file would do when loaded.

Two views, both static: our VM's verdict on every import (policy and how it is used) and,
where fickling can decompile the stream, the equivalent Python program. Nothing is run.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mlscan.context import Budget, Settings
from mlscan.errors import AnalysisStop
from mlscan.kinds import HEAD_SIZE, Kind, looks_like_pickle, sniff
from mlscan.picklevm.machine import Machine, Trace
from mlscan.picklevm.names import normalize
from mlscan.picklevm.policy import default_policy
from mlscan.picklevm.reader import Reader
from mlscan.picklevm.values import describe, describe_args

FICKLING_MAX_BYTES = 16 * 1024 * 1024
"""Larger pickle streams are explained from our trace only (fickling reads all in memory)."""


def _pickles_in(path: Path, budget: Budget) -> Iterator[tuple[str, BinaryIO]]:
    """(label, stream) for the file itself or each pickle member of a zip checkpoint."""
    fh = open(path, "rb")  # closed by explain_path
    head = fh.read(HEAD_SIZE)
    fh.seek(0)
    kind = sniff(head, path.name)
    if kind is Kind.ZIP:
        from mlscan.containers.zipread import ZipReader, iter_entries

        reader = ZipReader(fh, path.stat().st_size, budget)
        for entry in iter_entries(reader.listing()):
            stream = reader.open(entry)
            peek = stream.read(HEAD_SIZE)
            if looks_like_pickle(peek) and not entry.name.split("/")[-1].isdigit():
                yield entry.name, io.BytesIO(peek + stream.read())
        return
    if kind is Kind.PICKLE:
        yield path.name, fh
        return
    raise ValueError(f"{path.name}: not a pickle or zip checkpoint (detected: {kind.value})")


def _trace_lines(trace: Trace) -> list[str]:
    policy = default_policy()
    lines = []
    seen: set[str] = set()
    for ref in trace.globals:
        q = normalize(ref.qualname)
        if q in seen:
            continue
        seen.add(q)
        verdict, reason = policy.classify(q)
        uses = ", ".join(sorted(u for u in ref.uses)) or "imported"
        lines.append(f"  {verdict.value:9} {q}  [{uses}; {reason}; offset {ref.offset}]")
    calls = [c for c in trace.calls if c.op != "NEWOBJ"][:50]
    if calls:
        lines.append("  calls:")
        lines += [f"    @{c.offset} {c.op}: {describe(c.func)}({describe_args(c.args)})"
                  for c in calls]
    for ev in trace.events:
        lines.append(f"  {ev.kind} @{ev.offset}: {ev.detail}")
    return lines


def _decompile(data: bytes) -> str:
    try:
        import ast

        from fickling.fickle import Pickled

        return ast.unparse(Pickled.load(data).ast)
    except Exception as exc:  # noqa: BLE001 - fickling raises many types on odd streams
        return f"(fickling could not decompile this stream: {type(exc).__name__}: {exc})"


def explain_path(path: Path) -> str:
    budget = Budget(Settings())
    out: list[str] = []
    for label, stream in _pickles_in(path, budget):
        out.append(f"== {label}")
        reader = Reader(stream)
        machine = Machine(reader, budget)
        try:
            machine.run()
        except AnalysisStop as exc:
            out.append(f"  stream breaks at offset {exc.offset}: {exc.message}")
        out += _trace_lines(machine.trace) or ["  (imports nothing: plain data)"]
        end = machine.trace.end_offset
        if 0 < end <= FICKLING_MAX_BYTES:
            stream.seek(0)
            out.append("  decompiled (fickling):")
            program = _decompile(stream.read(end))
            out += ["    " + line for line in program.splitlines()[:200]]
        stream.close()
    return "\n".join(out) + "\n"

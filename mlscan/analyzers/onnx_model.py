"""ONNX models: external-data locations that escape the model folder; custom op domains.

The ModelProto is walked with our protobuf reader (graph, subgraphs in If/Loop/Scan
attributes, training graphs, functions). Tensor bytes are skipped, never copied.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.hf_repo import escapes
from mlscan.containers.protobuf import LEN, Buffer, Field, by_number, fields, text
from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import Kind
from mlscan.model import Finding, Severity
from mlscan.rulesets.model_formats import ONNX_CUSTOM_DOMAIN, ONNX_EXTERNAL_DATA

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training",
                              "ai.onnx.preview.training", "com.microsoft",
                              "com.microsoft.nchwc", "com.microsoft.experimental",
                              "ai.onnx.contrib", "com.ms.internal.nhwc", "pkg.onnxscript.torch_lib",
                              "pkg.onnxscript.torch_lib.common", "pkg.torch.onnx"})
MAX_DEPTH = 32
MAX_IN_MEMORY = 512 << 20
# ModelProto / GraphProto / NodeProto / AttributeProto / TensorProto field numbers.
M_GRAPH, M_OPSET, M_TRAINING, M_FUNCTIONS = 7, 8, 20, 25
G_NODE, G_INIT, G_SPARSE = 1, 5, 15
N_OPTYPE, N_DOMAIN, N_ATTR = 4, 7, 5
A_T, A_G, A_TENSORS, A_GRAPHS, A_SPARSE, A_SPARSES = 5, 6, 10, 11, 22, 23
T_NAME, T_EXTERNAL, T_LOCATION = 8, 13, 14
F_NODE, F_DOMAIN = 7, 10


def load_buffer(src: Source) -> Buffer:
    """A memory map of a top-level file (pages are touched only where fields are read)
    or the bytes of a nested member (bounded)."""
    stream = src.stream
    if src.fs_path is not None and hasattr(stream, "fileno"):
        try:
            if src.size:
                return memoryview(mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ))
        except (OSError, ValueError):
            pass
    data = stream.read(MAX_IN_MEMORY + 1)
    if len(data) > MAX_IN_MEMORY:
        raise LimitExceeded(f"nested protobuf larger than {MAX_IN_MEMORY >> 20} MiB")
    return data


class _Walker:
    def __init__(self, buf: Buffer, src: Source, budget: Budget) -> None:
        self.buf, self.src, self.budget = buf, src, budget
        self.folder = src.fs_path.parent if src.fs_path is not None else None
        self.domains: dict[str, str] = {}
        self.findings: list[Finding] = []
        self.seen_locations: set[str] = set()

    def model(self) -> None:
        buf = self.buf
        for f in fields(buf):
            if f.wire != LEN:
                continue
            if f.number == M_GRAPH:
                self.graph(f, "graph", 0)
            elif f.number == M_OPSET:
                domain = _text_field(buf, f, 1) or ""
                self.domain(domain, "opset_import")
            elif f.number == M_TRAINING:
                for g in fields(buf, f.start, f.end):
                    if g.wire == LEN and g.number in (1, 2):
                        self.graph(g, "training_info", 0)
            elif f.number == M_FUNCTIONS:
                domain = _text_field(buf, f, F_DOMAIN) or ""
                self.domain(domain, "function")
                for n in by_number(buf, f.start, f.end, F_NODE):
                    self.node(n, "function", 1)

    def domain(self, domain: str, where: str) -> None:
        if domain not in STANDARD_DOMAINS and domain not in self.domains:
            self.domains[domain] = where

    def graph(self, g: Field, where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise LimitExceeded(f"ONNX subgraphs nested deeper than {MAX_DEPTH}")
        self.budget.check_time()
        for f in fields(self.buf, g.start, g.end):
            if f.wire != LEN:
                continue
            if f.number == G_NODE:
                self.node(f, where, depth)
            elif f.number == G_INIT:
                self.tensor(f)
            elif f.number == G_SPARSE:
                for t in fields(self.buf, f.start, f.end):
                    if t.wire == LEN and t.number in (1, 2):
                        self.tensor(t)

    def node(self, n: Field, where: str, depth: int) -> None:
        op, domain = "", ""
        for f in fields(self.buf, n.start, n.end):
            if f.wire != LEN:
                continue
            if f.number == N_OPTYPE:
                op = text(self.buf, f, 256)
            elif f.number == N_DOMAIN:
                domain = text(self.buf, f, 256)
            elif f.number == N_ATTR:
                self.attribute(f, where, depth)
        if domain not in STANDARD_DOMAINS and domain not in self.domains:
            self.domains[domain] = f"{where} node {op}"

    def attribute(self, a: Field, where: str, depth: int) -> None:
        for f in fields(self.buf, a.start, a.end):
            if f.wire != LEN:
                continue
            if f.number in (A_T, A_TENSORS):
                self.tensor(f)
            elif f.number in (A_G, A_GRAPHS):
                self.graph(f, f"{where}/subgraph", depth + 1)
            elif f.number in (A_SPARSE, A_SPARSES):
                for t in fields(self.buf, f.start, f.end):
                    if t.wire == LEN and t.number in (1, 2):
                        self.tensor(t)

    def tensor(self, t: Field) -> None:
        name = ""
        for f in fields(self.buf, t.start, t.end):
            if f.wire != LEN:
                continue
            if f.number == T_NAME:
                name = text(self.buf, f, 512)
            elif f.number == T_EXTERNAL:
                key = _text_field(self.buf, f, 1)
                value = _text_field(self.buf, f, 2)
                if key == "location" and value is not None:
                    self.location(value, name)

    def location(self, location: str, tensor: str) -> None:
        if location in self.seen_locations:
            return
        self.seen_locations.add(location)
        problem = None
        if escapes(location) or "\x00" in location:
            problem = "is an absolute path or climbs out with '..'"
        elif self.folder is not None:
            problem = _link_escape(self.folder, location)
        if problem is not None:
            self.findings.append(ONNX_EXTERNAL_DATA.finding(
                self.src.path, f"{self.src.name}: tensor {tensor!r} external data location "
                f"{location!r} {problem}: loading reads that file, saving overwrites it",
                evidence=location, member=self.src.member,
                severity=Severity.HIGH if "link" in problem else None))


def _link_escape(folder: Path, location: str) -> str | None:
    path = folder / location
    try:
        if not path.exists():
            return None
        real, base = path.resolve(), folder.resolve()
    except (OSError, RuntimeError):
        return "cannot be resolved (symlink loop)"
    if base not in real.parents:
        return f"is a symlink to {real}, outside the model folder"
    return None


def _text_field(buf: Buffer, msg: Field, number: int) -> str | None:
    for f in by_number(buf, msg.start, msg.end, number):
        return text(buf, f, 4096)
    return None


@register(Kind.ONNX)
def analyze_onnx(src: Source, budget: Budget) -> Iterator[Finding]:
    buf = load_buffer(src)
    if len(buf) == 0:
        raise MalformedError("empty ONNX file")
    walker = _Walker(buf, src, budget)
    try:
        walker.model()
    finally:
        yield from walker.findings
        for domain, where in sorted(walker.domains.items())[:20]:
            yield ONNX_CUSTOM_DOMAIN.finding(
                src.path, f"{src.name}: operators from custom domain {domain!r} ({where}) need "
                "a native extension library", evidence=domain, member=src.member)

"""TensorFlow SavedModel / GraphDef / keras_metadata.pb: dangerous ops and Keras Lambda
metadata, read with our protobuf reader (TensorFlow is never imported)."""

from __future__ import annotations

import json
from collections.abc import Iterator

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.keras_config import check_config, looks_like_keras
from mlscan.analyzers.onnx_model import load_buffer
from mlscan.containers.protobuf import LEN, VARINT, Buffer, Field, by_number, fields, text
from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import Kind
from mlscan.model import Finding, Severity
from mlscan.rulesets.model_formats import TF_DANGEROUS_OP

CRITICAL_OPS = {
    "PyFunc": "calls a Python function", "PyFuncStateless": "calls a Python function",
    "EagerPyFunc": "calls a Python function", "WriteFile": "writes a file",
}
HIGH_OPS = {
    "ReadFile": "reads a file", "MatchingFiles": "lists files matching a pattern",
    "ImmutableConst": "memory-maps a file path", "LoadAndRemapMatrix": "reads a checkpoint file",
}
DEBUG_OPS = frozenset({"DebugIdentity", "DebugIdentityV2", "DebugNanCount",
                       "DebugNumericSummary", "DebugNumericSummaryV2"})
MAX_DEPTH = 8
MAX_JSON = 32 << 20
# NodeDef fields; MetaGraphDef 2 = graph_def; GraphDef 1 = node, 2 = library;
# FunctionDefLibrary 1 = function; FunctionDef 3 = node_def; AttrValue 2 = s.
ND_NAME, ND_OP, ND_ATTR = 1, 2, 5


class _Walker:
    def __init__(self, buf: Buffer, src: Source, budget: Budget) -> None:
        self.buf, self.src, self.budget = buf, src, budget
        self.findings: list[Finding] = []
        self.reported: set[tuple[str, str]] = set()

    def saved_model(self, start: int, end: int) -> None:
        for mg in by_number(self.buf, start, end, 2):  # meta_graphs
            for gd in by_number(self.buf, mg.start, mg.end, 2):  # graph_def
                self.graph_def(gd.start, gd.end)

    def graph_def(self, start: int, end: int) -> None:
        for f in fields(self.buf, start, end):
            if f.wire != LEN:
                continue
            if f.number == 1:
                self.node(f, "graph")
            elif f.number == 2:
                for fn in by_number(self.buf, f.start, f.end, 1):
                    name = ""
                    for sig in by_number(self.buf, fn.start, fn.end, 1):
                        name = next((text(self.buf, x, 256) for x in
                                     by_number(self.buf, sig.start, sig.end, 1)), "")
                    for nd in by_number(self.buf, fn.start, fn.end, 3):
                        self.node(nd, f"function {name}")

    def node(self, nd: Field, where: str) -> None:
        self.budget.check_time()
        name = op = ""
        attrs: dict[str, str] = {}
        for f in fields(self.buf, nd.start, nd.end):
            if f.wire != LEN:
                continue
            if f.number == ND_NAME:
                name = text(self.buf, f, 512)
            elif f.number == ND_OP:
                op = text(self.buf, f, 256)
            elif f.number == ND_ATTR:
                key = next((text(self.buf, x, 256) for x in
                            by_number(self.buf, f.start, f.end, 1)), "")
                for val in by_number(self.buf, f.start, f.end, 2):
                    s = next((text(self.buf, x, 4096) for x in
                              by_number(self.buf, val.start, val.end, 2)), None)
                    if s is not None:
                        attrs[key] = s
        self.judge(op, name, attrs, where)

    def judge(self, op: str, name: str, attrs: dict[str, str], where: str) -> None:
        sev, why = None, ""
        if op in CRITICAL_OPS:
            sev, why = Severity.CRITICAL, CRITICAL_OPS[op]
        elif op in HIGH_OPS:
            sev, why = Severity.HIGH, HIGH_OPS[op]
        elif op == "PrintV2" and attrs.get("output_stream", "").startswith("file://"):
            sev, why = Severity.HIGH, f"prints tensors to {attrs['output_stream']}"
        elif op in DEBUG_OPS and attrs.get("debug_urls"):
            sev, why = Severity.HIGH, "sends tensors to a debug URL"
        if sev is None or (op, where) in self.reported:
            return
        self.reported.add((op, where))
        extra = f" (token {attrs['token']!r})" if "token" in attrs else ""
        self.findings.append(TF_DANGEROUS_OP.finding(
            self.src.path, f"{self.src.name}: {where} has op {op} (node {name!r}) that {why}"
            f"{extra}", evidence=op, member=self.src.member, severity=sev))

    def keras_json(self, start: int, end: int, depth: int = 0) -> Iterator[tuple[str, object]]:
        """JSON objects with Keras class names anywhere in the message tree (keras metadata
        strings in SavedObjects and keras_metadata.pb)."""
        if depth > MAX_DEPTH:
            return
        try:
            items = list(fields(self.buf, start, end))
        except MalformedError:
            return  # not a message, just bytes
        for f in items:
            if f.wire != LEN or f.end - f.start < 2:
                continue
            first = self.buf[f.start]
            if first == 0x7B and f.end - f.start <= MAX_JSON:  # '{'
                raw = bytes(self.buf[f.start:f.end])
                if b'"class_name"' in raw:
                    try:
                        yield f"field {f.number}", json.loads(raw)
                        continue
                    except (ValueError, RecursionError):
                        pass
            yield from self.keras_json(f.start, f.end, depth + 1)


def _is_saved_model(buf: Buffer) -> bool:
    """SavedModel starts with schema version (field 1, varint) then meta_graphs."""
    for f in fields(buf, 0, min(len(buf), 16)) if len(buf) >= 2 else ():
        return f.number == 1 and f.wire == VARINT
    return False


@register(Kind.TF_SAVEDMODEL)
def analyze_tf(src: Source, budget: Budget) -> Iterator[Finding]:
    buf = load_buffer(src)
    if len(buf) == 0:
        raise MalformedError("empty protobuf file")
    walker = _Walker(buf, src, budget)
    try:
        try:
            saved = _is_saved_model(buf)
        except MalformedError:
            saved = False
        if saved:
            walker.saved_model(0, len(buf))
        else:
            walker.graph_def(0, len(buf))  # frozen GraphDef (or keras_metadata.pb)
    except RecursionError:
        raise LimitExceeded("protobuf nested too deeply") from None
    finally:
        yield from walker.findings
    for where, obj in walker.keras_json(0, len(buf)):
        if looks_like_keras(obj):
            yield from check_config(obj, src, budget, f"Keras metadata ({where})")

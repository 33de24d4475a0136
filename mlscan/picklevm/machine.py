"""A symbolic pickle machine: walks the opcode stream like `pickle.Unpickler` would, but every
import becomes a `GlobalRef` and every call a `CallRef`. Nothing is imported or called.

Handles protocols 0-5, memo (PUT/GET/MEMOIZE), STACK_GLOBAL from memo'd strings,
GLOBAL/INST/OBJ/NEWOBJ/NEWOBJ_EX/REDUCE/BUILD, results that are POPped, frames straddling
opcodes (frames are ignored: the stream is read as one sequence), and truncated streams
(what was seen before the break stays in the trace).
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.picklevm.reader import Reader
from mlscan.picklevm.values import (
    MARK,
    Blob,
    CallRef,
    DictV,
    GlobalRef,
    Opaque,
    Seq,
    arg_items,
    describe,
)

MAX_NESTING = 5000
"""Pickler.save recurses per level, so no real pickle nests containers this deep."""

# Runs of "push a constant, POP it": no effect at all, so they are skipped at C speed
# (50 MB of them must not hide a payload at the end, nor take minutes).
# A MARK followed only by fixed-size constants up to the opcode that consumes them (how
# lists of numbers are batched): the values never matter to the verdict, so the batch is
# skipped in one regex step instead of one interpreter step per number.
_CONST_BATCH = re.compile(rb"(?:G.{8}|K.|M..|J....|N|\x88|\x89){16,}+(?=[etld\x90\x91])",
                          re.DOTALL)
_NOOP_RUN = re.compile(rb"(?:[N\x88\x89)\]}]0|K.0|M..0|J....0|G.{8}0)++", re.DOTALL)

KEEP_BYTES = 1 << 20
"""bytes/str values up to this size are kept whole; larger ones are skipped (Blob)."""

_unpack_i = struct.Struct("<i").unpack
_unpack_I = struct.Struct("<I").unpack
_unpack_Q = struct.Struct("<Q").unpack
_unpack_H = struct.Struct("<H").unpack
_unpack_d = struct.Struct(">d").unpack
_unpack_from_i = struct.Struct("<i").unpack_from
_unpack_from_I = struct.Struct("<I").unpack_from
_MISSING = object()


@dataclass(frozen=True)
class Event:
    """Something the pickle does that is judged on its own (not by a global's name)."""

    kind: str
    """dynamic-call | tamper | ext"""
    offset: int
    detail: str
    target: GlobalRef | None = None


@dataclass
class Trace:
    """Everything one pickle stream imports and does, in order."""

    globals: list[GlobalRef] = field(default_factory=list)
    calls: list[CallRef] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    protocol: int = 0
    opcodes: int = 0
    complete: bool = False
    """STOP was reached."""
    end_offset: int = 0


BlobHook = Callable[[bytes | None, int, int], None]
"""Called for bytes values that may hold an embedded payload: (data or None, offset, size).
`data` is None when the value was too large to keep; the hook may read it from the stream."""


class Machine:
    def __init__(self, reader: Reader, budget: Budget, on_blob: BlobHook | None = None) -> None:
        self.r = reader
        self.budget = budget
        self.on_blob = on_blob
        self.trace = Trace()
        self.stack: list[Any] = []
        self.marks: list[int] = []
        self.memo: dict[int, Any] = {}
        self.max_memo = budget.limits.max_pickle_memo
        self.max_stack = budget.limits.max_pickle_stack

    # -- helpers -----------------------------------------------------------------------
    def _global(self, module: str, name: str, offset: int, via: str) -> GlobalRef:
        ref = GlobalRef(module, name, offset, via)
        self.trace.globals.append(ref)
        return ref

    def _pop(self) -> Any:
        if not self.stack:
            raise MalformedError("stack underflow", self.r.offset)
        value = self.stack.pop()
        if value is MARK:
            raise MalformedError("unexpected MARK on the stack", self.r.offset)
        return value

    def _pop_mark(self) -> list[Any]:
        if not self.marks:
            raise MalformedError("no MARK to pop to", self.r.offset)
        at = self.marks.pop()
        items = self.stack[at + 1:]
        del self.stack[at:]
        return items

    def _push(self, value: Any) -> None:
        self.stack.append(value)
        if len(self.stack) > self.max_stack:
            raise LimitExceeded(f"pickle stack deeper than {self.max_stack} entries",
                                self.r.offset)

    def _memo_put(self, idx: int, value: Any) -> None:
        if idx > self.max_memo:
            # picklers number memo slots 0, 1, 2...; the C unpickler sizes its table by the
            # index, so a huge one is a memory bomb aimed at the loader (or a scanner)
            raise LimitExceeded(f"memo index {idx} far beyond any real pickle (sparse memo)",
                                self.r.offset)
        if len(self.memo) >= self.max_memo and idx not in self.memo:
            raise LimitExceeded(f"pickle memo larger than {self.max_memo} entries (memo flood)",
                                self.r.offset)
        if isinstance(value, (bytes, bytearray)) or (isinstance(value, str) and len(value) > 256):
            value = Blob(len(value), bytes(value[:64]) if isinstance(value, bytes) else b"")
        self.memo[idx] = value  # names and symbolic values kept; bulk data slimmed

    def _memo_get(self, idx: int) -> Any:
        try:
            return self.memo[idx]
        except KeyError:
            raise MalformedError(f"memo index {idx} read before it was written",
                                 self.r.offset) from None

    def _bytes_value(self, n: int, offset: int, kind: str) -> Any:
        """Read (or skip) a length-prefixed bytes/str argument."""
        if n < 0:
            raise MalformedError("negative length", offset)
        if n <= KEEP_BYTES:
            raw = self.r.read(n)
            if kind != "str" and n >= 8 and self.on_blob is not None:
                self.on_blob(raw, self.r.offset - n, n)
            if kind == "str":
                try:
                    return raw.decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    # the real unpickler raises here: the load stops at this opcode
                    raise MalformedError("invalid UTF-8 in a unicode string argument",
                                         offset) from None
            if kind == "string":  # py2 str: the default Unpickler decodes ASCII to str
                return _ascii_or_bytes(raw)
            return raw
        start = self.r.offset
        self.r.fill(64)
        head = self.r.data[self.r.pos:self.r.pos + 64]
        if kind != "str" and self.on_blob is not None:
            self.on_blob(None, start, n)
        self.r.skip(n)
        return Blob(n, head)

    # -- the interpreter ---------------------------------------------------------------
    def run(self) -> Trace:
        """Interpret one pickle (up to STOP). Raises MalformedError/LimitExceeded on a break;
        the trace collected so far stays available in `self.trace`."""
        r = self.r
        stack = self.stack
        push = stack.append
        trace = self.trace
        budget = self.budget
        memo = self.memo
        max_memo = self.max_memo
        ops = 0
        while True:
            ops += 1
            if not ops & 0xFFFF:
                budget.check_time()
                if len(stack) > self.max_stack:
                    raise LimitExceeded(f"pickle stack deeper than {self.max_stack} entries",
                                        r.offset)
            # Fast path: the opcodes that dominate real streams (dict keys, memo traffic,
            # small ints), decoded straight from the buffer when it holds enough bytes.
            data = r.data
            pos = r.pos
            if pos + 300 <= len(data):
                op = data[pos]
                if op == 0x94 and stack:  # MEMOIZE
                    value = stack[-1]
                    kind = type(value)
                    if len(memo) < max_memo and kind is not bytes and not (
                            kind is str and len(value) > 256):
                        memo[len(memo)] = value
                        r.pos = pos + 1
                        continue
                elif op == 0x8C:  # SHORT_BINUNICODE
                    end = pos + 2 + data[pos + 1]
                    try:
                        push(data[pos + 2:end].decode("utf-8", "surrogatepass"))
                        r.pos = end
                        continue
                    except UnicodeDecodeError:
                        pass  # the slow path reports it
                elif op == 0x71 and stack:  # BINPUT
                    value = stack[-1]
                    kind = type(value)
                    if len(memo) < max_memo and kind is not bytes and not (
                            kind is str and len(value) > 256):
                        memo[data[pos + 1]] = value
                        r.pos = pos + 2
                        continue
                elif op == 0x4B:  # BININT1
                    push(data[pos + 1])
                    r.pos = pos + 2
                    continue
                elif op == 0x4A:  # BININT
                    push(_unpack_from_i(data, pos + 1)[0])
                    r.pos = pos + 5
                    continue
                elif op == 0x68:  # BINGET
                    value = memo.get(data[pos + 1], _MISSING)
                    if value is not _MISSING:
                        push(value)
                        r.pos = pos + 2
                        continue
                elif op == 0x58:  # BINUNICODE (short ones)
                    n = _unpack_from_I(data, pos + 1)[0]
                    if n <= 256:
                        try:
                            push(data[pos + 5:pos + 5 + n].decode("utf-8", "surrogatepass"))
                            r.pos = pos + 5 + n
                            continue
                        except UnicodeDecodeError:
                            pass
            if r.pos >= len(r.data) and not r.fill(1):
                trace.opcodes += ops - 1
                trace.end_offset = r.offset
                raise MalformedError("pickle ends without STOP (truncated stream)", r.offset)
            offset = r.base + r.pos
            op = r.data[r.pos]
            r.pos += 1
            # Most frequent opcodes first.
            if op == 0x71:  # BINPUT
                self._memo_put(r.read(1)[0], stack[-1] if stack else None)
            elif op == 0x94:  # MEMOIZE
                if not stack:
                    raise MalformedError("MEMOIZE on an empty stack", offset)
                self._memo_put(len(self.memo), stack[-1])
            elif op == 0x68:  # BINGET
                push(self._memo_get(r.read(1)[0]))
            elif op == 0x4B:  # BININT1
                push(r.read(1)[0])
            elif op == 0x58:  # BINUNICODE
                push(self._bytes_value(_unpack_I(r.read(4))[0], offset, "str"))
            elif op == 0x8C:  # SHORT_BINUNICODE
                push(self._bytes_value(r.read(1)[0], offset, "str"))
            elif op == 0x28:  # MARK
                self.marks.append(len(stack))
                push(MARK)
                batch = _CONST_BATCH.match(r.data, r.pos)
                if batch is not None:
                    r.pos = batch.end()
                    push(Opaque("constants"))
                if len(self.marks) > MAX_NESTING:
                    raise LimitExceeded(f"more than {MAX_NESTING} MARKs open at once: no "
                                        "pickler writes that (crafted)", offset)
            elif op == 0x29:  # EMPTY_TUPLE
                push(Seq("tuple"))
            elif op in (0x85, 0x86, 0x87):  # TUPLE1/2/3
                n = op - 0x84
                if len(stack) < n:
                    raise MalformedError("stack underflow in TUPLEn", offset)
                items = stack[-n:]
                if MARK in items:
                    raise MalformedError("MARK inside TUPLEn", offset)
                del stack[-n:]
                seq = Seq("tuple", items, n)
                self._nest(seq, items, offset)
                push(seq)
            elif op == 0x74:  # TUPLE
                items = self._pop_mark()
                seq = Seq("tuple", items[:4096], len(items))
                self._nest(seq, items, offset)
                push(seq)
            elif op == 0x52:  # REDUCE
                args = self._pop()
                func = self._pop()
                push(self._call(func, args, offset, "REDUCE"))
            elif op == 0x81:  # NEWOBJ
                args = self._pop()
                cls = self._pop()
                push(self._new(cls, args, offset, "NEWOBJ"))
            elif op == 0x92:  # NEWOBJ_EX
                self._pop()  # kwargs
                args = self._pop()
                cls = self._pop()
                push(self._new(cls, args, offset, "NEWOBJ_EX"))
            elif op == 0x62:  # BUILD
                state = self._pop()
                obj = self._pop()
                self._build(obj, state, offset)
                push(obj)
            elif op == 0x93:  # STACK_GLOBAL
                name = self._pop()
                module = self._pop()
                if isinstance(module, str) and isinstance(name, str):
                    push(self._global(module, name, offset, "STACK_GLOBAL"))
                else:
                    trace.events.append(Event(
                        "dynamic-call", offset, "STACK_GLOBAL with a non-constant name: "
                        f"{describe(module)}.{describe(name)}"))
                    push(Opaque("computed global"))
            elif op == 0x63:  # GLOBAL
                module_b = r.readline()
                name_b = r.readline()
                push(self._global(_text(module_b), _text(name_b), offset, "GLOBAL"))
            elif op == 0x5D:  # EMPTY_LIST
                push(Seq("list"))
            elif op == 0x7D:  # EMPTY_DICT
                push(DictV())
            elif op == 0x61:  # APPEND
                value = self._pop()
                target = self._pop()
                self._append(target, [value], offset)
                push(target)
            elif op == 0x65:  # APPENDS
                items = self._pop_mark()
                target = self._pop()
                self._append(target, items, offset)
                push(target)
            elif op == 0x73:  # SETITEM
                value = self._pop()
                key = self._pop()
                target = self._pop()
                self._setitems(target, [key, value], offset)
                push(target)
            elif op == 0x75:  # SETITEMS
                items = self._pop_mark()
                target = self._pop()
                self._setitems(target, items, offset)
                push(target)
            elif op == 0x4D:  # BININT2
                push(_unpack_H(r.read(2))[0])
            elif op == 0x4A:  # BININT
                push(_unpack_i(r.read(4))[0])
            elif op == 0x47:  # BINFLOAT
                push(_unpack_d(r.read(8))[0])
            elif op == 0x4E:  # NONE
                push(None)
            elif op == 0x88:  # NEWTRUE
                push(True)
            elif op == 0x89:  # NEWFALSE
                push(False)
            elif op == 0x30:  # POP
                if stack and stack[-1] is MARK:
                    stack.pop()
                    self.marks.pop()
                else:
                    self._pop()
                self._skip_noops()
            elif op == 0x31:  # POP_MARK
                self._pop_mark()
            elif op == 0x32:  # DUP
                if not stack:
                    raise MalformedError("DUP on an empty stack", offset)
                push(stack[-1])
            elif op == 0x72:  # LONG_BINPUT
                self._memo_put(_unpack_I(r.read(4))[0], stack[-1] if stack else None)
            elif op == 0x6A:  # LONG_BINGET
                push(self._memo_get(_unpack_I(r.read(4))[0]))
            elif op == 0x70:  # PUT
                self._memo_put(_int_line(r.readline(), offset), stack[-1] if stack else None)
            elif op == 0x67:  # GET
                push(self._memo_get(_int_line(r.readline(), offset)))
            elif op == 0x43:  # SHORT_BINBYTES
                push(self._bytes_value(r.read(1)[0], offset, "bytes"))
            elif op == 0x42:  # BINBYTES
                push(self._bytes_value(_unpack_I(r.read(4))[0], offset, "bytes"))
            elif op == 0x8E:  # BINBYTES8
                push(self._bytes_value(_unpack_Q(r.read(8))[0], offset, "bytes"))
            elif op == 0x96:  # BYTEARRAY8
                push(self._bytes_value(_unpack_Q(r.read(8))[0], offset, "bytes"))
            elif op == 0x8D:  # BINUNICODE8
                push(self._bytes_value(_unpack_Q(r.read(8))[0], offset, "str"))
            elif op == 0x55:  # SHORT_BINSTRING
                push(self._bytes_value(r.read(1)[0], offset, "string"))
            elif op == 0x54:  # BINSTRING
                push(self._bytes_value(_unpack_i(r.read(4))[0], offset, "string"))
            elif op == 0x53:  # STRING
                push(_ascii_or_bytes(_py_string(r.readline(), offset)))
            elif op == 0x56:  # UNICODE
                push(codecs.decode(r.readline(), "raw_unicode_escape", "replace"))
            elif op == 0x49:  # INT
                line = r.readline()
                push(True if line == b"01" else False if line == b"00" else
                     _int_line(line, offset))
            elif op == 0x4C:  # LONG
                push(_int_line(r.readline().rstrip(b"L"), offset))
            elif op == 0x46:  # FLOAT
                try:
                    push(float(r.readline()))
                except ValueError:
                    raise MalformedError("bad FLOAT literal", offset) from None
            elif op == 0x8A:  # LONG1
                push(int.from_bytes(r.read(r.read(1)[0]), "little", signed=True))
            elif op == 0x8B:  # LONG4
                n = _unpack_i(r.read(4))[0]
                if n < 0 or n > 1 << 20:
                    raise MalformedError("LONG4 length out of range", offset)
                push(int.from_bytes(r.read(n), "little", signed=True))
            elif op == 0x6C:  # LIST
                items = self._pop_mark()
                seq = Seq("list", items[:4096], len(items))
                self._nest(seq, items, offset)
                push(seq)
            elif op == 0x64:  # DICT
                items = self._pop_mark()
                d = DictV()
                for i in range(0, len(items) - 1, 2):
                    d.set(items[i], items[i + 1])
                self._nest(d, items, offset)
                push(d)
            elif op == 0x8F:  # EMPTY_SET
                push(Seq("set"))
            elif op == 0x90:  # ADDITEMS
                items = self._pop_mark()
                target = self._pop()
                self._append(target, items, offset)
                push(target)
            elif op == 0x91:  # FROZENSET
                items = self._pop_mark()
                push(Seq("frozenset", items[:4096], len(items)))
            elif op == 0x69:  # INST
                module = _text(r.readline())
                name = _text(r.readline())
                args = self._pop_mark()
                cls = self._global(module, name, offset, "INST")
                push(self._call(cls, Seq("tuple", args, len(args)), offset, "INST"))
            elif op == 0x6F:  # OBJ
                items = self._pop_mark()
                if not items:
                    raise MalformedError("OBJ without a class", offset)
                push(self._call(items[0], Seq("tuple", items[1:], len(items) - 1), offset, "OBJ"))
            elif op == 0x50:  # PERSID
                push(Opaque(f"persistent id {r.readline()[:40]!r}"))
            elif op == 0x51:  # BINPERSID
                pid = self._pop()
                self._mark_args(pid)
                push(Opaque("persistent id"))
            elif op in (0x82, 0x83, 0x84):  # EXT1/2/4
                size = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                code = int.from_bytes(r.read(size), "little")
                trace.events.append(Event(
                    "dynamic-call", offset, f"EXT{size} {code}: global chosen from the loader's "
                    "copyreg extension registry, cannot be resolved statically"))
                push(Opaque(f"extension {code}"))
            elif op == 0x80:  # PROTO
                trace.protocol = r.read(1)[0]
                if trace.protocol > 5:
                    raise MalformedError(f"unsupported pickle protocol {trace.protocol}", offset)
            elif op == 0x95:  # FRAME: frames are only a buffering hint; read straight through
                r.read(8)
            elif op == 0x97:  # NEXT_BUFFER
                push(Opaque("out-of-band buffer"))
            elif op == 0x98:  # READONLY_BUFFER
                pass
            elif op == 0x2E:  # STOP
                if not stack or stack[-1] is MARK:
                    raise MalformedError("STOP with nothing to return (stack underflow)", offset)
                trace.opcodes += ops
                trace.complete = True
                trace.end_offset = r.offset
                return trace
            else:
                trace.opcodes += ops
                trace.end_offset = offset
                raise MalformedError(f"invalid opcode 0x{op:02x}", offset)

    def _skip_noops(self) -> None:
        r = self.r
        while True:
            m = _NOOP_RUN.match(r.data, r.pos)
            if m is None:
                return
            r.pos = m.end()
            if r.pos < len(r.data) - 16:
                return  # the run ended inside the buffer
            self.budget.check_time()
            if not r.fill(len(r.data) - r.pos + 65536):
                if r.pos >= len(r.data):
                    return

    def _nest(self, container: Seq | DictV, items: list[Any], offset: int) -> None:
        deepest = max((v.depth for v in items[:4096] if isinstance(v, (Seq, DictV))),
                      default=-1)
        if deepest + 1 > container.depth:
            container.depth = deepest + 1
            if container.depth > MAX_NESTING:
                raise LimitExceeded(f"containers nested more than {MAX_NESTING} deep: no "
                                    "pickler writes that (crafted to exhaust recursive tools)",
                                    offset)

    # -- semantics that matter for security --------------------------------------------
    def _mark_args(self, value: Any, depth: int = 0) -> None:
        """Globals passed along as data ('arg' use)."""
        if depth > 4:
            return
        if isinstance(value, GlobalRef):
            value.uses.add("arg")
        elif isinstance(value, Seq):
            for item in value.items[:64]:
                self._mark_args(item, depth + 1)
        elif isinstance(value, DictV):
            for k, v in value.items[:64]:
                self._mark_args(k, depth + 1)
                self._mark_args(v, depth + 1)

    def _call(self, func: Any, args: Any, offset: int, op: str) -> Any:
        from mlscan.picklevm.gadgets import resolve_call

        self._mark_args(args)
        call = CallRef(func, args, offset, op)
        self.trace.calls.append(call)
        return resolve_call(self, call)

    def _new(self, cls: Any, args: Any, offset: int, op: str) -> Any:
        self._mark_args(args)
        call = CallRef(cls, args, offset, op)
        self.trace.calls.append(call)
        if isinstance(cls, GlobalRef):
            cls.uses.add("new")
        else:
            self.trace.events.append(Event(
                "dynamic-call", offset, f"{op} on a computed class {describe(cls)}"))
        return call

    def _build(self, obj: Any, state: Any, offset: int) -> None:
        from mlscan.picklevm.gadgets import on_build

        if isinstance(obj, GlobalRef):
            self.trace.events.append(Event(
                "tamper", offset, f"BUILD sets attributes on {obj.qualname} itself (changes "
                "code or a module for everything loaded later)", obj))
            self._mark_args(state)
            return
        self._mark_args(state)
        if isinstance(obj, CallRef):
            obj.state = state
            if isinstance(obj.func, GlobalRef):
                obj.func.uses.add("build")
        on_build(self, obj, state, offset)

    def _append(self, target: Any, items: list[Any], offset: int) -> None:
        self._mark_args(Seq("list", items[:64], len(items)))
        if isinstance(target, Seq):
            target.extend(items)
            self._nest(target, items, offset)
        elif isinstance(target, GlobalRef):
            self.trace.events.append(Event(
                "tamper", offset, f"appends to {target.qualname} itself", target))

    def _setitems(self, target: Any, items: list[Any], offset: int) -> None:
        self._mark_args(Seq("list", items[:64], len(items)))
        if isinstance(target, DictV):
            for i in range(0, len(items) - 1, 2):
                target.set(items[i], items[i + 1])
            self._nest(target, items, offset)
        elif isinstance(target, GlobalRef):
            self.trace.events.append(Event(
                "tamper", offset, f"sets items on {target.qualname} itself", target))

    def arg_list(self, args: Any) -> list[Any]:
        return arg_items(args)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _ascii_or_bytes(raw: bytes) -> str | bytes:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return raw


def _int_line(raw: bytes, offset: int) -> int:
    try:
        return int(raw)
    except ValueError:
        raise MalformedError(f"bad integer literal {raw[:20]!r}", offset) from None


def _py_string(raw: bytes, offset: int) -> bytes:
    """Protocol 0 STRING: a quoted, escaped literal (decoded without eval)."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[:1] in (b"'", b'"'):
        raw = raw[1:-1]
    else:
        raise MalformedError("STRING argument is not quoted", offset)
    try:
        return codecs.escape_decode(raw)[0]
    except ValueError:
        raise MalformedError("bad escape in STRING argument", offset) from None

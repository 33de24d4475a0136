"""Symbolic values on the pickle VM's stack. Nothing here ever calls scanned code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONTAINER_CAP = 4096
"""Items kept per container; beyond that only the count grows (bounded memory)."""


class _Mark:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MARK"


MARK = _Mark()


@dataclass(eq=False)
class GlobalRef:
    """A name the pickle imports (or reaches through getattr/import_module)."""

    module: str
    name: str
    """Dotted qualname inside the module; '' for the module object itself."""
    offset: int
    via: str
    """GLOBAL, STACK_GLOBAL, INST, EXT, getattr, import_module..."""
    uses: set[str] = field(default_factory=set)
    """call | new | build | arg (how the pickle used it)."""

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}" if self.name else self.module


@dataclass(eq=False)
class CallRef:
    """The result of a call the pickle makes (REDUCE, INST, OBJ, NEWOBJ...)."""

    func: Any
    args: Any
    offset: int
    op: str
    state: Any = None
    """The BUILD state applied to the result, if any."""


@dataclass(eq=False)
class Seq:
    kind: str
    """list, tuple, set, frozenset"""
    items: list[Any] = field(default_factory=list)
    count: int = 0
    depth: int = 0
    """How deeply containers are nested inside this one."""

    def add(self, value: Any) -> None:
        self.count += 1
        if len(self.items) < CONTAINER_CAP:
            self.items.append(value)

    def extend(self, values: list[Any]) -> None:
        room = CONTAINER_CAP - len(self.items)
        if room > 0:
            self.items.extend(values[:room])
        self.count += len(values)


@dataclass(eq=False)
class DictV:
    items: list[tuple[Any, Any]] = field(default_factory=list)
    count: int = 0
    depth: int = 0

    def set(self, key: Any, value: Any) -> None:
        self.count += 1
        if len(self.items) < CONTAINER_CAP:
            self.items.append((key, value))

    def get(self, key: str) -> Any:
        for k, v in reversed(self.items):
            if k == key:
                return v
        return None

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.items)


@dataclass(eq=False)
class Blob:
    """A bytes/str value too large to keep; only its size and first bytes are remembered."""

    size: int
    head: bytes


@dataclass(eq=False)
class Opaque:
    """Something the VM cannot know statically (persistent IDs, out-of-band buffers...)."""

    what: str


def describe(value: Any, depth: int = 0) -> str:
    """Short human-readable rendering for messages and `explain`."""
    if depth > 3:
        return "..."
    if isinstance(value, GlobalRef):
        return value.qualname
    if isinstance(value, CallRef):
        return f"{describe(value.func, depth + 1)}({describe_args(value.args, depth + 1)})"
    if isinstance(value, Seq):
        inner = ", ".join(describe(v, depth + 1) for v in value.items[:6])
        more = ", ..." if value.count > 6 else ""
        if value.kind == "tuple":
            return f"({inner}{more}{',' if value.count == 1 else ''})"
        return f"[{inner}{more}]" if value.kind == "list" else f"{value.kind}({inner}{more})"
    if isinstance(value, DictV):
        inner = ", ".join(f"{describe(k, depth + 1)}: {describe(v, depth + 1)}"
                          for k, v in value.items[:4])
        return "{" + inner + (", ..." if value.count > 4 else "") + "}"
    if isinstance(value, Blob):
        return f"<{value.size} bytes>"
    if isinstance(value, Opaque):
        return f"<{value.what}>"
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value[:60]))
        return text + ("..." if len(value) > 60 else "")
    if isinstance(value, str):
        return repr(value[:80]) + ("..." if len(value) > 80 else "")
    return repr(value)[:80]


def describe_args(args: Any, depth: int = 0) -> str:
    if isinstance(args, Seq) and args.kind == "tuple":
        inner = ", ".join(describe(v, depth) for v in args.items[:6])
        return inner + (", ..." if args.count > 6 else "")
    return describe(args, depth)


def arg_items(args: Any) -> list[Any]:
    """Positional items of a call's argument tuple (empty when unknown)."""
    if isinstance(args, Seq):
        return args.items
    return []

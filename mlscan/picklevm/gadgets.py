"""Calls whose meaning depends on their arguments: gadgets that turn data into calls
(partial, attrgetter, methodcaller, getattr, copyreg, torch/numpy rebuild helpers) and
joblib's inline array data. Judged by what they end up calling, never by name alone."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mlscan.errors import MalformedError
from mlscan.picklevm.names import normalize
from mlscan.picklevm.values import (
    Blob,
    CallRef,
    DictV,
    GlobalRef,
    Opaque,
    Seq,
    arg_items,
    describe,
)

if TYPE_CHECKING:
    from mlscan.picklevm.machine import Machine


def _event(m: Machine, kind: str, offset: int, detail: str,
           target: GlobalRef | None = None) -> None:
    from mlscan.picklevm.machine import Event

    m.trace.events.append(Event(kind, offset, detail, target))


def _derived(m: Machine, base: GlobalRef, attr: str, offset: int, via: str) -> GlobalRef:
    """A name reached through an attribute lookup on an imported global."""
    base.uses.add("arg")
    name = f"{base.name}.{attr}" if base.name else attr
    ref = GlobalRef(base.module, name, offset, via)
    m.trace.globals.append(ref)
    return ref


def _as_called(m: Machine, target: Any, offset: int, how: str) -> None:
    """`target` ends up being called by a gadget."""
    if isinstance(target, GlobalRef):
        target.uses.add("call")
        target.uses.add(f"via:{how}")
    else:
        _event(m, "dynamic-call", offset, f"{how} calls {describe(target)}, which cannot be "
               "resolved statically")


def _as_new(m: Machine, cls: Any, offset: int, how: str) -> None:
    if isinstance(cls, GlobalRef):
        cls.uses.add("new")
    else:
        _event(m, "dynamic-call", offset, f"{how} instantiates a computed class {describe(cls)}")


# -- handlers for calls to specific globals: (machine, call, positional args) -> pushed value
Handler = Callable[["Machine", CallRef, list[Any]], Any]


def _getattr(m: Machine, call: CallRef, args: list[Any]) -> Any:
    if len(args) >= 2 and isinstance(args[0], GlobalRef) and isinstance(args[1], str):
        return _derived(m, args[0], args[1], call.offset, "getattr")
    _event(m, "dynamic-call", call.offset,
           f"getattr({', '.join(describe(a) for a in args[:2])}) cannot be resolved statically")
    return Opaque("getattr result")


def _import_module(m: Machine, call: CallRef, args: list[Any]) -> Any:
    if args and isinstance(args[0], str):
        ref = GlobalRef(args[0], "", call.offset, "import_module")
        m.trace.globals.append(ref)
        return ref
    _event(m, "dynamic-call", call.offset, "imports a module whose name is computed")
    return Opaque("imported module")


def _partial(m: Machine, call: CallRef, args: list[Any]) -> Any:
    if args:
        _as_called(m, args[0], call.offset, "functools.partial")
    return call


def _reduce(m: Machine, call: CallRef, args: list[Any]) -> Any:
    if args:
        _as_called(m, args[0], call.offset, "functools.reduce")
    return call


def _reconstructor(m: Machine, call: CallRef, args: list[Any]) -> Any:
    if args:
        _as_new(m, args[0], call.offset, "copyreg._reconstructor")
    if len(args) >= 2 and isinstance(args[1], GlobalRef):
        base = args[1]
        if normalize(base.qualname) != "builtins.object":
            base.uses.add("call")  # base.__new__(cls, state) and base.__init__(obj, state)
    return call


def _newobj(m: Machine, call: CallRef, args: list[Any]) -> Any:
    if args:
        _as_new(m, args[0], call.offset, "copyreg.__newobj__")
    return call


def _rebuild_from_type(m: Machine, call: CallRef, args: list[Any]) -> Any:
    # torch._tensor._rebuild_from_type_v2(func, new_type, args, state): calls func(*args)
    if args:
        _as_called(m, args[0], call.offset, "torch._tensor._rebuild_from_type_v2")
    if len(args) >= 2:
        _as_new(m, args[1], call.offset, "torch._tensor._rebuild_from_type_v2")
    return call


def _first_arg_class(m: Machine, call: CallRef, args: list[Any]) -> Any:
    # numpy _reconstruct(cls, ...), torch _rebuild_wrapper_subclass(cls, ...): cls.__new__ only
    if args:
        _as_new(m, args[0], call.offset, describe(call.func))
    return call


def _codecs_encode(m: Machine, call: CallRef, args: list[Any]) -> Any:
    """Protocols 0-2 write bytes as _codecs.encode(text, 'latin1'): rebuild the bytes so an
    embedded pickle or archive is scanned like a BINBYTES value would be."""
    if len(args) >= 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        try:
            data = args[0].encode("latin1")
        except UnicodeEncodeError:
            return call
        if m.on_blob is not None and len(data) >= 8:
            m.on_blob(data, call.offset, len(data))
        return data
    return call


def _load_from_bytes(m: Machine, call: CallRef, args: list[Any]) -> Any:
    """torch.storage._load_from_bytes(b) is torch.load(BytesIO(b)): how `pickle.dumps(tensor)`
    stores storages. Judged by the bytes, which were scanned as an embedded payload."""
    if not args or not isinstance(args[0], (bytes, Blob)):
        _event(m, "dynamic-call", call.offset, "torch.storage._load_from_bytes on computed "
               f"data {describe(args[0] if args else None)}: a nested torch.load of bytes "
               "that cannot be inspected")
    return call


def _deferred(m: Machine, call: CallRef, args: list[Any]) -> Any:
    return call  # attrgetter/methodcaller/itemgetter: judged when their result is called


HANDLERS: dict[str, Handler] = {
    "builtins.getattr": _getattr,
    "importlib.import_module": _import_module,
    "builtins.__import__": _import_module,
    "functools.partial": _partial,
    "functools.reduce": _reduce,
    "copyreg._reconstructor": _reconstructor,
    "copyreg.__newobj__": _newobj,
    "copyreg.__newobj_ex__": _newobj,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type,
    "torch._tensor._rebuild_from_type": _rebuild_from_type,
    "torch._utils._rebuild_wrapper_subclass": _first_arg_class,
    "numpy.core.multiarray._reconstruct": _first_arg_class,
    "numpy._core.multiarray._reconstruct": _first_arg_class,
    "_codecs.encode": _codecs_encode,
    "torch.storage._load_from_bytes": _load_from_bytes,
    "operator.attrgetter": _deferred,
    "operator.methodcaller": _deferred,
    "operator.itemgetter": _deferred,
}


def resolve_call(m: Machine, call: CallRef) -> Any:
    """What a call pushes, recording how each global is used."""
    func = call.func
    args = arg_items(call.args)
    if isinstance(func, GlobalRef):
        func.uses.add("call")
        handler = HANDLERS.get(normalize(func.qualname))
        return handler(m, call, args) if handler else call
    if isinstance(func, CallRef) and isinstance(func.func, GlobalRef):
        return _call_result(m, call, func, func.func, args)
    _event(m, "dynamic-call", call.offset,
           f"calls {describe(func)}, which cannot be resolved statically")
    return call


def _call_result(m: Machine, call: CallRef, inner: CallRef, maker: GlobalRef,
                 args: list[Any]) -> Any:
    """Calling the object another call returned."""
    kind = normalize(maker.qualname)
    inner_args = arg_items(inner.args)
    if kind == "functools.partial":
        return call  # the wrapped function was judged when the partial was built
    if kind in ("operator.attrgetter", "operator.methodcaller"):
        attr = inner_args[0] if inner_args else None
        obj = args[0] if args else None
        if isinstance(obj, GlobalRef) and isinstance(attr, str):
            ref = _derived(m, obj, attr, call.offset, kind)
            if kind == "operator.methodcaller":
                ref.uses.add("call")
                ref.uses.add(f"via:{kind}")
            return ref
        _event(m, "dynamic-call", call.offset, f"{kind}({describe(attr)}) applied to "
               f"{describe(obj)}, which cannot be resolved statically")
        return Opaque(kind)
    if kind == "operator.itemgetter":
        return Opaque("item")
    _event(m, "dynamic-call", call.offset,
           f"calls the object returned by {describe(inner)}")
    return call


# -- BUILD semantics --------------------------------------------------------------------
JOBLIB_WRAPPERS = frozenset({
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
})


def on_build(m: Machine, obj: Any, state: Any, offset: int) -> None:
    if not isinstance(obj, CallRef) or not isinstance(obj.func, GlobalRef):
        return
    kind = normalize(obj.func.qualname)
    if kind == "functools.partial" and isinstance(state, Seq) and state.items:
        _as_called(m, state.items[0], offset, "functools.partial (restored state)")
    elif kind in JOBLIB_WRAPPERS and isinstance(state, DictV):
        _skip_joblib_array(m, state, offset)


_DTYPE_RE = re.compile(r"^[<>|=]?([a-zA-Z])(\d*)$")
_DEFAULT_SIZES = {"b": 1, "B": 1, "?": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8,
                  "q": 8, "Q": 8, "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16}


def _dtype_size(dtype: Any) -> tuple[int, bool]:
    """(itemsize, has_objects) of a pickled numpy.dtype(...) call; raises if unknown."""
    if not isinstance(dtype, CallRef):
        raise MalformedError("joblib array with a dtype that is not a numpy.dtype")
    args = arg_items(dtype.args)
    code = args[0] if args else None
    if not isinstance(code, str):
        raise MalformedError("joblib array dtype without a type code")
    state = arg_items(dtype.state) if isinstance(dtype.state, Seq) else []
    # state: (version, byteorder, subdescr, names, fields, elsize, alignment, flags)
    if len(state) >= 5 and state[4] is not None and not isinstance(state[4], Seq):
        if isinstance(state[4], DictV) and state[4].count:
            # structured dtype: object fields make it a nested pickle
            if any(isinstance(v, Seq) and v.items and _is_object_dtype(v.items[0])
                   for _, v in state[4].items):
                return 0, True
    if len(state) >= 6 and isinstance(state[5], int) and state[5] > 0:
        return state[5], code.lstrip("<>|=")[:1] == "O"
    match = _DTYPE_RE.match(code)
    if not match:
        raise MalformedError(f"joblib array with unsupported dtype code {code!r}")
    letter, digits = match.groups()
    if letter == "O":
        return 8, True
    if digits:
        size = int(digits)
        return (size * 4 if letter == "U" else size), False
    if letter in _DEFAULT_SIZES:
        return _DEFAULT_SIZES[letter], False
    raise MalformedError(f"joblib array with unsupported dtype code {code!r}")


def _is_object_dtype(value: Any) -> bool:
    return isinstance(value, CallRef) and bool(arg_items(value.args)) and \
        arg_items(value.args)[0] in ("O", "O8", "O4", "|O")


def _skip_joblib_array(m: Machine, state: DictV, offset: int) -> None:
    """joblib writes array bytes right after the wrapper's BUILD, inside the stream."""
    from mlscan.picklevm.machine import Machine as _Machine

    itemsize, has_objects = _dtype_size(state.get("dtype"))
    if has_objects:
        inner = _Machine(m.r, m.budget, m.on_blob)
        try:
            inner.run()
        finally:
            m.trace.globals.extend(inner.trace.globals)
            m.trace.calls.extend(inner.trace.calls)
            m.trace.events.extend(inner.trace.events)
        return
    shape = state.get("shape")
    if not isinstance(shape, Seq) or not all(isinstance(x, int) and x >= 0
                                             for x in shape.items):
        raise MalformedError("joblib array without a valid shape", offset)
    count = math.prod(shape.items)
    if state.has("numpy_array_alignment_bytes"):
        m.r.skip(m.r.read(1)[0])
    m.r.skip(count * itemsize)

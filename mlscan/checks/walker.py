"""One iterative traversal of a module that keeps the context and runs every check.

Iterative (an explicit stack) so that deeply nested generated code cannot exhaust Python's
recursion limit. Context changes are stack items too: they run in source order, between the
nodes they bracket.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from mlscan.checks import nodes, triggers
from mlscan.checks.base import ALL, Check, Handler, dispatch_table
from mlscan.checks.context import ClassInfo, Ctx, Frame
from mlscan.checks.fields import field_default
from mlscan.checks.names import NOT_LITERAL, kwarg, last_attr, literal, namespace_entry
from mlscan.checks.nodes import child_nodes, forget_recent, subnodes
from mlscan.checks.normalize import const_text

_TABLE: dict[type[ast.AST], list[Handler]] | None = None

# Stack items that change the context instead of visiting a node.
_FRAME, _POP_FRAME, _CLASS, _POP_CLASS = "frame", "pop_frame", "class", "pop_class"
_COND, _POP_COND, _LOOP, _POP_LOOP = "cond", "pop_cond", "loop", "pop_loop"
_WITH, _POP_WITH = "with", "pop_with"
_TERMINAL = (ast.Return, ast.Continue, ast.Break, ast.Raise)
_PLAIN = frozenset({ast.Attribute, ast.Subscript, ast.BinOp, ast.Compare, ast.UnaryOp, ast.Tuple,
                    ast.List, ast.Starred, ast.keyword, ast.arguments, ast.arg, ast.Expr,
                    ast.JoinedStr, ast.FormattedValue, ast.Slice, ast.Set, ast.Pass})
"""Node kinds `_expand` has no case for: when no check visits them, only their children
matter."""


def table() -> dict[type[ast.AST], list[Handler]]:
    global _TABLE
    if _TABLE is None:
        import mlscan.checks  # noqa: F401 - registers every family

        checks: list[Check] = [cls() for cls in ALL]
        _TABLE = dispatch_table(checks)
    return _TABLE


def walk(tree: ast.AST, ctx: Ctx) -> None:
    nodes.cache_scopes(True)
    try:
        _walk(tree, ctx)
    finally:
        nodes.cache_scopes(False)


def _walk(tree: ast.AST, ctx: Ctx) -> None:
    ctx.tree = tree
    handlers_for = table()
    stack: list[Any] = [tree]
    scopes: list[str] = []
    leaves = {t for t in (ast.Name, ast.Constant) if t not in handlers_for}
    plain = {t for t in _PLAIN if t not in handlers_for}
    while stack:
        item = stack.pop()
        t = type(item)
        if t is tuple:
            _apply(item, ctx, scopes)
            continue
        if t in leaves:
            continue  # (most nodes: nothing to visit, nothing below)
        if t in plain:
            stack.extend(reversed(child_nodes(item)))
            continue
        node: ast.AST = item
        if type(node) is ast.Call and ctx.names.alias_tests and not hasattr(node, "gated"):
            test = _alias_test(node, ctx)  # self._pause(x): time.sleep only on big jobs
            if test is not None:
                node.gated = True  # type: ignore[attr-defined]
                stack.extend(((_POP_COND, None), node, (_COND, test)))
                continue
        handlers = handlers_for.get(type(node))
        if isinstance(node, ast.Call) and ctx.names.alias_keywords:
            _partial_keywords(node, ctx)
        if isinstance(node, ast.Call) and node.keywords:
            _inline_kwargs(node, ctx)
        forget_recent()  # (the calls above may have rewritten keywords)
        if handlers:
            for handler in handlers:
                handler(node, ctx)
        stack.extend(reversed(_expand(node, ctx)))


def _apply(item: tuple[str, Any], ctx: Ctx, scopes: list[str]) -> None:
    op, payload = item
    if op == _FRAME:
        cls = ctx.classes[-1] if scopes and scopes[-1] == "class" else None
        # Each lambda gets its own name: callers are looked up by name, and one lambda's
        # role (a LambdaLR schedule, a hook) must not leak to functions another one calls.
        name = getattr(payload, "name", None) or (
            f"<lambda:{getattr(payload, 'lineno', 0)}:{getattr(payload, 'col_offset', 0)}>")
        frame = Frame(name, payload, cls, parent=ctx.frame.name)
        ctx.frames.append(frame)
        ctx.frames_by_name.setdefault(name, []).append(frame)
        scopes.append("func")
    elif op == _POP_FRAME:
        ctx.frames.pop()
        scopes.pop()
    elif op == _CLASS:
        ctx.classes.append(payload)
        scopes.append("class")
    elif op == _POP_CLASS:
        ctx.classes.pop()
        scopes.pop()
    elif op == _COND:
        ctx.conds.append(payload)
    elif op == _POP_COND:
        ctx.conds.pop()
    elif op == _LOOP:
        ctx.loops.append(payload)
        if isinstance(payload, ast.For):
            _bind_loop(payload, ctx)
    elif op == _POP_LOOP:
        ctx.loops.pop()
    elif op == _WITH:
        ctx.withs.append(payload)
    elif op == _POP_WITH:
        ctx.withs.pop()


def _block(stmts: list[ast.stmt]) -> list[Any]:
    """Statements in order; a guard clause (`if cond: return`) gates the statements after it."""
    out: list[Any] = []
    pops = 0
    for stmt in stmts:
        out.append(stmt)
        if (isinstance(stmt, ast.If) and not stmt.orelse and len(stmt.body) <= 3
                and isinstance(stmt.body[-1], _TERMINAL)):
            stmt.test.guard_of = stmt  # type: ignore[attr-defined]  # for reports on the guard
            out.append((_COND, stmt.test))
            pops += 1
    out.extend([(_POP_COND, None)] * pops)
    return out


def _expand(node: ast.AST, ctx: Ctx) -> list[Any]:
    """Children of `node` (in source order) with the context items around them."""
    t = type(node)
    if t is ast.Module:
        return _block(node.body)  # type: ignore[attr-defined]
    if t is ast.FunctionDef or t is ast.AsyncFunctionDef:
        fn: ast.FunctionDef = node  # type: ignore[assignment]
        ctx.defs.setdefault(fn.name, []).append(fn)
        for deco in fn.decorator_list:
            ctx.decorators.add(last_attr(deco.func if isinstance(deco, ast.Call) else deco))
        defaults = [d for d in (*fn.args.defaults, *fn.args.kw_defaults) if d is not None]
        _alias_defaults(fn, ctx)
        return [*fn.decorator_list, *defaults, (_FRAME, fn), *_block(fn.body), (_POP_FRAME, None)]
    if t is ast.Lambda:
        lam: ast.Lambda = node  # type: ignore[assignment]
        return [(_FRAME, lam), lam.body, (_POP_FRAME, None)]
    if t is ast.ClassDef:
        cd: ast.ClassDef = node  # type: ignore[assignment]
        ctx.class_defs[cd.name] = cd
        bases = tuple(ctx.names.qualname(b) or "" for b in cd.bases)
        return [*cd.decorator_list, *cd.bases, (_CLASS, ClassInfo(cd.name, bases)),
                *_block(cd.body), (_POP_CLASS, None)]
    if t is ast.If:
        iff: ast.If = node  # type: ignore[assignment]
        if not iff.orelse:
            return [iff.test, (_COND, iff.test), *_block(iff.body), (_POP_COND, None)]
        # The else branch runs when the test fails: same trigger kinds, marked as negated so
        # that the normal path (`else: dist.barrier()`) is not read as the gated one.
        negated = ast.copy_location(ast.UnaryOp(op=ast.Not(), operand=iff.test), iff.test)
        negated.else_branch = True  # type: ignore[attr-defined]
        negated.if_body = iff.body  # type: ignore[attr-defined]
        return [iff.test, (_COND, iff.test), *_block(iff.body), (_POP_COND, None),
                (_COND, negated), *_block(iff.orelse), (_POP_COND, None)]
    if t is ast.While:
        wh: ast.While = node  # type: ignore[assignment]
        return [wh.test, (_COND, wh.test), (_LOOP, wh), *_block(wh.body), (_POP_LOOP, None),
                (_POP_COND, None), *_block(wh.orelse)]
    if t is ast.For or t is ast.AsyncFor:
        fo: ast.For = node  # type: ignore[assignment]
        return [fo.iter, fo.target, (_LOOP, fo), *_block(fo.body), (_POP_LOOP, None),
                *_block(fo.orelse)]
    if t is ast.With or t is ast.AsyncWith:
        wi: ast.With = node  # type: ignore[assignment]
        items: list[Any] = []
        names = []
        for it in wi.items:
            items.append(it.context_expr)
            if it.optional_vars is not None:
                items.append(it.optional_vars)
                if isinstance(it.optional_vars, ast.Name):
                    ctx.frame.bind(it.optional_vars.id, it.context_expr)
            if isinstance(it.context_expr, ast.Call):
                names.append(ctx.names.call_name(it.context_expr))
        return [*items, (_WITH, "|".join(names)), *_block(wi.body), (_POP_WITH, None)]
    if t is ast.Try or t is ast.TryStar:
        tr: ast.Try = node  # type: ignore[assignment]
        return [*_block(tr.body), *tr.handlers, *_block(tr.orelse), *_block(tr.finalbody)]
    if t is ast.IfExp:
        ie: ast.IfExp = node  # type: ignore[assignment]
        return [ie.test, (_COND, ie.test), ie.body, ie.orelse, (_POP_COND, None)]
    if t is ast.BoolOp:
        bo: ast.BoolOp = node  # type: ignore[assignment]
        out: list[Any] = []
        for value in bo.values[:-1]:
            out.extend((value, (_COND, value)))
        out.append(bo.values[-1])
        out.extend([(_POP_COND, None)] * (len(bo.values) - 1))
        return out
    if t is ast.Import or t is ast.ImportFrom:
        ctx.names.add_import(node)  # type: ignore[arg-type]
        return []
    if t is ast.Call:
        ctx.note_call(node)  # type: ignore[arg-type]
        children = [c for c in child_nodes(node) if not hasattr(c, "inlined")]
        bound = _partial_call(node, ctx)  # type: ignore[arg-type]
        if bound is None:
            return children
        ctx.synthesized += 1  # (a budget: made calls must never expand without end)
        return [*children, bound] if ctx.synthesized <= _MAX_SYNTHESIZED else children
    elif t is ast.Assign:
        asg: ast.Assign = node  # type: ignore[assignment]
        if ctx.conds:
            _note_trigger_flags(asg, ctx)
        named = _module_by_setting(asg.value, ctx) or _function_type(asg.value)
        for target in asg.targets:
            if isinstance(target, ast.Name):
                ctx.frame.bind(target.id, asg.value)
                ctx.names.add_assign(target.id, named or asg.value,
                                     module_level=ctx.frame.node is None)
                if _fetched_by_name(asg.value):
                    ctx.hidden_names.add(target.id)  # run = getattr(builtins, "".join(...))
                elif isinstance(asg.value, ast.Call) and last_attr(asg.value.func) in (
                        "FunctionType", "LambdaType"):
                    ctx.code_functions.add(target.id)  # shim = types.FunctionType(code, {})
                if ctx.frame.node is None and ctx.classes:  # a class attribute, read as self.X
                    ctx.names.add_assign(f"self.{target.id}", _unwrap_static(asg.value))
                    if type(asg.value) is ast.Constant:  # _MOMENT_KEY = "exp_avg_sq"
                        ctx.self_attrs.setdefault(target.id, asg.value)
            elif (isinstance(target, ast.Tuple) and isinstance(asg.value, ast.Tuple)
                  and len(target.elts) == len(asg.value.elts)):
                for elt, value in zip(target.elts, asg.value.elts, strict=True):
                    if isinstance(elt, ast.Name):  # rank, world = get_rank(), get_world_size()
                        ctx.frame.bind(elt.id, value)
                    elif (isinstance(elt, ast.Attribute) and isinstance(elt.value, ast.Name)
                          and elt.value.id == "self"):  # self._rng, self._kw = torch.cuda, {...}
                        ctx.self_attrs[elt.attr] = value
                        ctx.names.add_assign(f"self.{elt.attr}", value)
            elif isinstance(target, ast.Tuple) and isinstance(asg.value, ast.Call):
                for i, elt in enumerate(target.elts):
                    if isinstance(elt, ast.Name):  # world, nodes = _job_shape(): part i of it
                        part = ast.Subscript(value=asg.value, slice=ast.Constant(i),
                                             ctx=ast.Load())
                        ctx.frame.bind(elt.id, ast.copy_location(part, asg.value))
            elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute)
                  and isinstance(target.value.value, ast.Name)
                  and target.value.value.id == "self"):  # self._scale[ids] = -0.25
                ctx.self_item_writes.setdefault(target.value.attr, []).append(asg.value)
            elif (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name)
                  and target.value.id == "self"):
                ctx.self_attrs[target.attr] = asg.value  # self.world = dist.get_world_size()
                ctx.names.add_assign(f"self.{target.attr}", asg.value)  # self._s = torch.seed
    elif t is ast.AnnAssign:
        ann: ast.AnnAssign = node  # type: ignore[assignment]
        default = _field_default(ann.value)
        if isinstance(ann.target, ast.Name) and default is not None:
            if ctx.frame.node is None and ctx.classes:  # dataclass field: self._rng
                ctx.self_attrs[ann.target.id] = default
            else:
                ctx.frame.bind(ann.target.id, default)
        elif (isinstance(ann.target, ast.Attribute) and isinstance(ann.target.value, ast.Name)
              and ann.target.value.id == "self" and default is not None):
            ctx.self_attrs[ann.target.attr] = default
    elif t is ast.AugAssign:
        aug: ast.AugAssign = node  # type: ignore[assignment]
        if isinstance(aug.target, ast.Name):  # correct += ...: no longer the constant it was
            grown = ast.BinOp(left=ast.Name(id=aug.target.id, ctx=ast.Load()), op=aug.op,
                              right=aug.value)
            ctx.frame.bind(aug.target.id, ast.copy_location(grown, aug))
    return child_nodes(node)


def _function_type(value: ast.expr) -> ast.expr | None:
    """`_FunctionType = type(lambda: None)`: the class types.FunctionType under another name
    (calling it with a code object runs that code)."""
    if not (type(value) is ast.Call and isinstance(value.func, ast.Name)
            and value.func.id == "type" and len(value.args) == 1
            and isinstance(value.args[0], ast.Lambda)):
        return None
    made = ast.Attribute(value=ast.Name(id="types", ctx=ast.Load()), attr="FunctionType",
                         ctx=ast.Load())
    return ast.copy_location(made, value)


def _module_by_setting(value: ast.expr, ctx: Ctx) -> ast.Call | None:
    """`importlib.import_module(cfg.cache_codec)` with the setting's default "pickle": the
    same call with the module name spelled, so the name reads as that module."""
    if not (type(value) is ast.Call and value.args and type(value.args[0]) is not ast.Constant
            and last_attr(value.func) in ("import_module", "__import__")):
        return None
    held = ctx.resolve(value.args[0])
    if not (isinstance(held, ast.Constant) and isinstance(held.value, str)):
        return None
    return ast.copy_location(ast.Call(func=value.func, args=[held], keywords=[]), value)


def _alias_defaults(fn: ast.FunctionDef | ast.AsyncFunctionDef, ctx: Ctx) -> None:
    """`def f(spec, _resolve=builtins.eval)`: a parameter whose default is a library function
    calls that function whenever the caller leaves it out. Only private names (`_resolve`,
    `_clock`) or classes (`cls=torch.optim.AdamW`): the alias is file-wide, and public
    function names (`fn`, `act`) are reused elsewhere."""
    positional = fn.args.posonlyargs + fn.args.args
    pairs = list(zip(positional[len(positional) - len(fn.args.defaults):], fn.args.defaults,
                     strict=True)) + [(a, d) for a, d in zip(fn.args.kwonlyargs,
                                                             fn.args.kw_defaults, strict=True)
                                      if d is not None]
    for arg, default in pairs:
        if isinstance(default, ast.Attribute) and (arg.arg.startswith("_") or (
                default.attr[:1].isupper())) and "." in (ctx.names.qualname(default) or ""):
            ctx.names.add_assign(arg.arg, default)


def _note_trigger_flags(asg: ast.Assign, ctx: Ctx) -> None:
    """`_State.topology = "tree"` set only under a strong trigger."""
    targets = [t for t in asg.targets if isinstance(t, ast.Attribute)
               and isinstance(t.value, ast.Name) and t.value.id not in ("self", "cls")]
    # (self.x is keyed by attribute name only: classes would share each other's flags)
    if not targets or not isinstance(asg.value, ast.Constant):
        return
    kinds = ctx.trigger_kinds(ctx.where()) & triggers.STRONG
    for target in targets if kinds else ():
        key = ast.unparse(target)
        ctx.trigger_flags[key] = ctx.trigger_flags.get(key, frozenset()) | kinds


def _unwrap_static(value: ast.expr) -> ast.expr:
    """`staticmethod(torch.manual_seed)` -> `torch.manual_seed`."""
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("staticmethod", "classmethod") and len(value.args) == 1):
        return value.args[0]
    return value


def _field_default(value: ast.expr | None) -> ast.expr | None:
    """`field(default_factory=lambda: random.Random(7))` -> `random.Random(7)`."""
    if (isinstance(value, ast.Call) and last_attr(value.func) == "field"):
        factory = next((k.value for k in value.keywords if k.arg == "default_factory"), None)
        default = next((k.value for k in value.keywords if k.arg == "default"), None)
        if isinstance(factory, ast.Lambda):
            return factory.body
        if factory is not None:
            return ast.copy_location(ast.Call(func=factory, args=[], keywords=[]), factory)
        return default
    return value


_MAX_SYNTHESIZED = 200
"""Calls made up per file (partials, dispatch tables, mapped calls). Real code needs few: the
most in any file of peft, lightning and our examples is 11."""


def _partial_call(call: ast.Call, ctx: Ctx) -> ast.AST | None:
    """A call made later, judged as the call it will make: `functools.partial(torch.load,
    map_location="cpu")` as `torch.load(map_location="cpu")` (for library functions: local
    ones are callbacks), and the deferred or mapped calls of `_deferred_call`."""
    if last_attr(call.func) != "partial" or not call.args or isinstance(call.args[0], ast.Starred):
        return _deferred_call(call, ctx)
    qual = ctx.names.qualname(call.args[0]) or ""
    if "." not in qual or "()" in qual or qual.startswith("self."):
        return None
    bound = ast.Call(func=call.args[0], args=call.args[1:], keywords=call.keywords)
    bound.made = True  # type: ignore[attr-defined]  # (no real call: semgrep cannot see it)
    return ast.copy_location(bound, call)


_DEFERRED = {"callback": 0, "push_async_callback": 0, "call_soon": 0,
             "call_soon_threadsafe": 0, "call_later": 1, "finalize": 1}
"""Registrars that call their argument at that position later with the arguments after it:
`stack.callback(torch._foreach_mul_, params, 0.9)` runs `torch._foreach_mul_(params, 0.9)`."""


def _deferred_call(call: ast.Call, ctx: Ctx) -> ast.AST | None:
    func = call.func
    if isinstance(func, ast.Name) and func.id == "map" and len(call.args) == 2 and (
            isinstance(call.args[0], (ast.Name, ast.Attribute, ast.Call))):
        # map(os.chmod, paths) / map(methodcaller("zero_"), (s[k] for s in ...)): one element
        items = call.args[1]
        if isinstance(items, ast.Name) and isinstance(
                held := ctx.lookup(items.id), (ast.GeneratorExp, ast.ListComp)) and not any(
                isinstance(n, ast.Call) and last_attr(n.func) == "map" for n in subnodes(held)):
            # states = (s["exp_avg_sq"] for s in ...); map(f, states) -- (a held comprehension
            # that maps again would expand without end: `prompts = [... for p, c in
            # zip(prompts, map(parse, prompts))]`, where the map is inside its own value)
            items = held
        item = items.elt if isinstance(items, (ast.GeneratorExp, ast.ListComp)) else items
        mapped = call.args[0]
        if isinstance(mapped, ast.Call):
            if not (last_attr(mapped.func) == "methodcaller" and mapped.args
                    and isinstance(method := literal(mapped.args[0]), str)):
                return None
            made = ast.Call(func=ast.Attribute(value=item, attr=method, ctx=ast.Load()),
                            args=mapped.args[1:], keywords=mapped.keywords)
        else:
            made = ast.Call(func=mapped, args=[item], keywords=[])
        return _looped(ast.copy_location(made, call), items)
    if (isinstance(func, ast.Attribute) and func.attr.startswith("_foreach_")
            and func.attr.endswith("_") and call.args
            and isinstance(call.args[0], (ast.ListComp, ast.GeneratorExp))):
        # torch._foreach_mul_([p.data for p in model.parameters()], 0.9): each p.data.mul_(0.9)
        method = func.attr[len("_foreach"):].lstrip("_")
        made = ast.Call(func=ast.Attribute(value=call.args[0].elt, attr=method, ctx=ast.Load()),
                        args=call.args[1:], keywords=call.keywords)
        return _looped(ast.copy_location(made, call), call.args[0])
    if isinstance(func, (ast.Call, ast.Subscript)):
        return _dispatched(call, ctx)
    if isinstance(func, ast.Name) and ctx.loops:
        return _looped_callables(call, func.id, ctx)
    started = _started_target(call, ctx)
    if started is not None:
        return started
    at = _DEFERRED.get(last_attr(func)) if isinstance(func, ast.Attribute) else None
    if at is None and ctx.names.call_name(call) == "atexit.register":
        at = 0
    if at is None or len(call.args) <= at or isinstance(call.args[at], (ast.Starred, ast.Lambda)):
        return None
    qual = ctx.names.qualname(call.args[at]) or ""
    if "." not in qual or "()" in qual or qual.startswith("self."):
        return None  # (local functions registered here are callbacks: roles judge them)
    made = ast.Call(func=call.args[at], args=call.args[at + 1:], keywords=call.keywords)
    return ast.copy_location(made, call)


_STARTERS = {"threading.Thread": "target", "multiprocessing.Process": "target",
             "threading.Timer": "function"}


def _started_target(call: ast.Call, ctx: Ctx) -> ast.AST | None:
    """`threading.Thread(target=urllib.request.urlopen, args=(req,), kwargs={...})` runs
    `urllib.request.urlopen(req, ...)` (library targets only: local ones are roles)."""
    name = ctx.names.call_name(call)
    if name not in _STARTERS:
        return None
    target = kwarg(call, _STARTERS[name]) or (
        call.args[1] if name == "threading.Timer" and len(call.args) > 1 else None)
    if target is None or "." not in (ctx.names.qualname(target) or "") or (
            ctx.names.qualname(target) or "").startswith("self."):
        return None
    args = kwarg(call, "args") or (call.args[2] if name == "threading.Timer" and len(
        call.args) > 2 else None)
    kwargs = kwarg(call, "kwargs")
    keywords = [ast.keyword(arg=key, value=v) for k, v in zip(
        kwargs.keys, kwargs.values, strict=True) if isinstance(key := literal(k), str)
    ] if isinstance(kwargs, ast.Dict) else []
    made = ast.Call(func=target, args=list(args.elts) if isinstance(args, (
        ast.Tuple, ast.List)) else [], keywords=keywords)
    return ast.copy_location(made, call)


def _dispatched(call: ast.Call, ctx: Ctx) -> ast.AST | None:
    """`_READERS.get(suffix, pickle.load)(fh)` runs `pickle.load(fh)` when the key is missing;
    `_TEARDOWN[world > LIMIT]()` runs one of the table's functions, picked by that test."""
    func = call.func
    if isinstance(func, ast.Call) and last_attr(func.func) == "get" and len(func.args) == 2:
        default = func.args[1]
        if "." in (ctx.names.qualname(default) or "") and isinstance(default, (
                ast.Name, ast.Attribute)):
            return ast.copy_location(ast.Call(func=default, args=call.args,
                                              keywords=call.keywords), call)
        return None
    if isinstance(func, ast.Subscript) and literal(func.slice) is NOT_LITERAL:
        pair = ctx.lookup(func.value.id) if isinstance(func.value, ast.Name) else func.value
        if isinstance(pair, ast.Dict) and len(pair.keys) == 2 and {
                literal(k) for k in pair.keys} == {True, False}:
            # {True: noop, False: dist.barrier}[is_main()]() is the pair (False's, True's)
            by_key = {literal(k): v for k, v in zip(pair.keys, pair.values, strict=True)}
            pair = ast.Tuple(elts=[by_key[False], by_key[True]], ctx=ast.Load())
        if isinstance(pair, (ast.Tuple, ast.List)) and len(pair.elts) == 2:
            # (dist.barrier, noop)[is_main]() runs the first when the test is false
            off, on = (_made_call(v, call, call.keywords, ctx) for v in pair.elts)
            if off is None and on is None:
                return None
            taken: list[ast.stmt] = [on] if on else [ast.copy_location(ast.Pass(), call)]
            return ast.copy_location(ast.If(test=func.slice, body=taken,
                                            orelse=[off] if off else []), call)
    if not (isinstance(func, ast.Subscript) and isinstance(func.value, ast.Name)
            and isinstance(table := ctx.lookup(func.value.id), ast.Dict)
            and 0 < len(table.values) <= 8):
        return None
    key = literal(func.slice)
    values = table.values if key is NOT_LITERAL else [  # _CLEANERS["keep"](p): that one only
        v for k, v in zip(table.keys, table.values, strict=True) if literal(k) == key]
    body: list[ast.stmt] = []
    for value in values:
        keywords = call.keywords
        if isinstance(value, ast.Call) and last_attr(value.func) == "partial" and value.args:
            keywords = [*value.keywords, *call.keywords]  # partial(shutil.rmtree, ...)
            value = value.args[0]
        made = _made_call(value, call, keywords, ctx)
        if made is not None:
            body.append(made)
    if not body:
        return None
    if key is not NOT_LITERAL:
        return body[0] if len(body) == 1 else None
    if isinstance(func.slice, ast.Name):  # for name in backends: SEEDERS[name](seed)
        for loop in ctx.loops:
            if (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)
                    and loop.target.id == func.slice.id):
                loop.over_callables = True  # type: ignore[attr-defined]  # (picks functions)
    return ast.copy_location(ast.If(test=func.slice, body=body, orelse=[]), call)


def _made_call(value: ast.expr, call: ast.Call, keywords: list[ast.keyword],
               ctx: Ctx) -> ast.stmt | None:
    """`call` made with `value` in place of its callee: a library function, or a method of
    a local object (`accelerator.wait_for_everyone`); not `self.` methods, which are roles.
    A lambda without parameters stands for the call in its body
    (`lambda: dist.barrier() if is_dist() else None`)."""
    if isinstance(value, ast.Lambda) and not value.args.args and not call.args:
        body = value.body
        test = None
        if isinstance(body, ast.IfExp) and isinstance(body.body, ast.Call):
            test, body = body.test, body.body
        if not isinstance(body, ast.Call):
            return None
        made_stmt: ast.stmt = ast.copy_location(ast.Expr(ast.copy_location(ast.Call(
            func=body.func, args=body.args, keywords=body.keywords), call)), call)
        return made_stmt if test is None else ast.copy_location(
            ast.If(test=test, body=[made_stmt], orelse=[]), call)
    if not isinstance(value, (ast.Name, ast.Attribute)) or ("." not in (
            ctx.names.qualname(value) or "") and not (
            isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name)
            and value.value.id != "self")):  # (accelerator.wait_for_everyone: an object's)
        return None
    made = ast.copy_location(ast.Call(func=value, args=call.args, keywords=keywords), call)
    return ast.copy_location(ast.Expr(made), call)


def _looped_callables(call: ast.Call, name: str, ctx: Ctx) -> ast.AST | None:
    """`for reseed in _SEEDERS: reseed(seed)` with `_SEEDERS = (random.seed, np.random.seed)`:
    the call of each library function the loop walks over."""
    loop = next((lp for lp in reversed(ctx.loops) if isinstance(lp, ast.For)
                 and isinstance(lp.target, ast.Name) and lp.target.id == name), None)
    if loop is None:
        return None
    items = loop.iter
    if isinstance(items, ast.Name):
        items = ctx.lookup(items.id) or items
    if not isinstance(items, (ast.Tuple, ast.List)) or not 0 < len(items.elts) <= 8:
        return None
    body = [made for value in items.elts
            if (made := _made_call(value, call, call.keywords, ctx)) is not None]
    if not body:
        return None
    loop.over_callables = True  # type: ignore[attr-defined]  # (not a loop for the checks)
    return body[0] if len(body) == 1 else ast.copy_location(
        ast.If(test=ast.Constant(True), body=body, orelse=[]), call)


def _looped(made: ast.Call, items: ast.expr) -> ast.AST:
    """`made`, the call for one element of `items`, inside the loops of the comprehension that
    builds them (so the checks see what the loop variables range over)."""
    if not isinstance(items, (ast.ListComp, ast.GeneratorExp)):
        return made
    body: ast.stmt = ast.copy_location(ast.Expr(made), made)
    for gen in reversed(items.generators):
        body = ast.copy_location(ast.For(target=gen.target, iter=gen.iter, body=[body], orelse=[],
                                         type_comment=None), made)
    return body


def _alias_key(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else (
        f"self.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
        and func.value.id == "self" else "")


def _alias_test(call: ast.Call, ctx: Ctx) -> ast.expr | None:
    key = _alias_key(call)
    return ctx.names.alias_tests.get(key) if key else None


def _partial_keywords(call: ast.Call, ctx: Ctx) -> None:
    """`loader = partial(torch.load, weights_only=True)`; `loader(p)` reads as
    `torch.load(p, weights_only=True)`."""
    bound = ctx.names.alias_keywords.get(_alias_key(call))
    if bound:
        known = {k.arg for k in call.keywords}
        for kw in bound:
            if kw.arg not in known:
                added = ast.keyword(arg=kw.arg, value=kw.value)
                added.inlined = True  # type: ignore[attr-defined]  # not walked a second time
                call.keywords.append(added)


def _inline_kwargs(call: ast.Call, ctx: Ctx) -> None:
    """`f(**opts)` with `opts = {"k": v}` or `dict(k=v)` seen earlier: checks see `k=v`."""
    extra: list[ast.keyword] = []
    for kw in call.keywords:
        if kw.arg is not None or not isinstance(kw.value, (ast.Name, ast.Call, ast.Subscript,
                                                            ast.Attribute)):
            continue
        value: ast.AST | None = None
        if isinstance(kw.value, ast.Call):  # f(**_load_kwargs()): the dict a helper returns
            value = _returned_dict(kw.value, ctx)
        elif isinstance(kw.value, ast.Name):
            value = ctx.lookup(kw.value.id) or ctx.param_default(kw.value.id)  # (def f(o={..}))
        elif isinstance(kw.value, ast.Attribute):
            value = ctx.value_of(kw.value)  # np.load(p, **self._np_opts)
        own_kwargs = isinstance(kw.value, ast.Name) and isinstance(
            ctx.frame.node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and (
            ctx.frame.node.args.kwarg is not None
            and ctx.frame.node.args.kwarg.arg == kw.value.id)  # f(**kwargs) passes its own
        if (not isinstance(value, (ast.Dict, ast.Call)) and not isinstance(kw.value, ast.Call)
                and not own_kwargs):
            value = ctx.resolve(kw.value)  # f(**_OPTS["index_kw"]), opts handed in by a caller
        if _as_dict(value, ctx):  # np.load(p, **self._np_kwargs), _np_kwargs = asdict(cfg.x)
            extra.extend(ast.keyword(arg=key, value=default) for key in _RISKY_OPTIONS
                         if (default := field_default(ctx.disk_path, key)) is not None)
        if isinstance(value, ast.Dict):
            pairs = zip(value.keys, value.values, strict=True)
            extra.extend(ast.keyword(arg=k.value, value=v) for k, v in pairs
                         if isinstance(k, ast.Constant) and isinstance(k.value, str))
            for k, v in zip(value.keys, value.values, strict=True):
                if k is None and isinstance(v, ast.Call) and last_attr(v.func) == "fromkeys" and (
                        len(v.args) == 2):  # {**dict.fromkeys(_FLAGS, True)}
                    extra.extend(ast.keyword(arg=name, value=v.args[1])
                                 for name in _const_names(v.args[0], ctx))
        elif isinstance(value, ast.Call) and last_attr(value.func) == "dict":
            extra.extend(ast.keyword(arg=k.arg, value=k.value) for k in value.keywords
                         if k.arg is not None)
            if len(value.args) == 1:  # dict([("weights_only", False)]), dict(zip(keys, values))
                extra.extend(ast.keyword(arg=k, value=v) for k, v in _pairs(value.args[0], ctx))
    known = {kw.arg for kw in call.keywords}
    for kw in extra:
        if kw.arg not in known:
            kw.inlined = True  # type: ignore[attr-defined]  # not walked a second time
            call.keywords.append(kw)


_RISKY_OPTIONS = ("allow_pickle", "weights_only", "trust_remote_code", "safe_mode")
"""Loader options whose declared config default decides whether the load can run code."""


def _as_dict(value: ast.AST | None, ctx: Ctx) -> bool:
    """`dataclasses.asdict(cfg.np_load)` (also through a name or `self.` attribute bound to
    it): an options dict made from a config class, whose keys are its declared fields."""
    if isinstance(value, (ast.Name, ast.Attribute)):
        value = ctx.lookup(value.id) if isinstance(value, ast.Name) else ctx.value_of(value)
    return (isinstance(value, ast.Call) and last_attr(value.func) in ("asdict", "vars")
            and len(value.args) == 1)


def _const_names(expr: ast.expr, ctx: Ctx) -> list[str]:
    """The strings of a tuple or list literal, also through a name bound to one."""
    if isinstance(expr, ast.Name):
        held = ctx.lookup(expr.id)
        expr = held if isinstance(held, ast.expr) else expr
    if not isinstance(expr, (ast.Tuple, ast.List)):
        return []
    return [n for e in expr.elts if isinstance(n := literal(e), str)]


def _pairs(expr: ast.expr, ctx: Ctx) -> list[tuple[str, ast.expr]]:
    """String-keyed pairs of `[("k", v), ...]` or `zip(("k", ...), (v, ...))` (the keys also
    through a name bound to a tuple: `zip(_HUB_FLAGS, (rev, not offline))`)."""
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "zip"
            and len(expr.args) == 2 and isinstance(expr.args[0], ast.Name)
            and isinstance(expr.args[1], (ast.List, ast.Tuple))):
        names = _const_names(expr.args[0], ctx)
        return list(zip(names, expr.args[1].elts, strict=False)) if names else []
    if isinstance(expr, (ast.List, ast.Tuple)):
        pairs = [tuple(e.elts) for e in expr.elts
                 if isinstance(e, (ast.Tuple, ast.List)) and len(e.elts) == 2]
    elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
          and expr.func.id == "zip" and len(expr.args) == 2
          and all(isinstance(a, (ast.List, ast.Tuple)) for a in expr.args)):
        keys, values = expr.args[0].elts, expr.args[1].elts  # type: ignore[attr-defined]
        pairs = list(zip(keys, values, strict=False))
    else:
        return []
    return [(key, v) for k, v in pairs if (key := const_text(k, {})) is not None]


def _returned_dict(call: ast.Call, ctx: Ctx) -> ast.expr | None:
    """The dict literal a small local function returns, its locals put in (`strict = ...;
    return {"weights_only": strict}` -> `{"weights_only": <what strict was>}`)."""
    if not isinstance(call.func, ast.Name):
        return None
    returned = ctx.returns(call.func.id)  # (one tuple of every return value)
    if not (isinstance(returned, ast.Tuple) and len(returned.elts) == 1
            and isinstance(returned.elts[0], ast.Dict)):
        return None
    return returned.elts[0]


_EMA_OWNER = re.compile(r"(?i)ema|shadow|swa|teacher|averaged")
"""`self.ema.state_dict()`: the averaged copy, which EMA code updates in place."""


def _bind_yielded(loop: ast.For, ctx: Ctx) -> None:
    """`for _, flat in self._moments():` with `_moments` yielding `(p, st["exp_avg_sq"])`: the
    loop names are bound to what the local generator yields."""
    it = loop.iter
    if not (isinstance(it, ast.Call) and (isinstance(it.func, ast.Name) or (
            isinstance(it.func, ast.Attribute) and isinstance(it.func.value, ast.Name)
            and it.func.value.id == "self"))):
        return
    fns = ctx.defs.get(last_attr(it.func), [])
    if len(fns) != 1:
        return
    values = [n.value for n in subnodes(fns[0]) if isinstance(n, ast.Yield) and n.value]
    if len(values) != 1:
        return
    target, value = loop.target, values[0]
    if isinstance(target, ast.Name):
        ctx.frame.bind(target.id, value)
    elif (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
          and len(target.elts) == len(value.elts)):
        for elt, part in zip(target.elts, value.elts, strict=True):
            if isinstance(elt, ast.Name) and elt.id != "_":
                ctx.frame.bind(elt.id, part)


_MASTER_PARAMS = re.compile(r"(?i)^_?(fp32|fp16|master|trainable|float|half)_param(eter)?s$")


def _param_collection(expr: ast.expr, ctx: Ctx, depth: int = 0) -> bool:
    """A list of the model's parameters: `[p for n, p in m.named_parameters() if ...]`,
    `list(m.parameters())`, the sum of such lists, or a name bound to one."""
    if isinstance(expr, ast.Call) and last_attr(expr.func) in ("list", "tuple") and expr.args:
        expr = expr.args[0]
    if _MASTER_PARAMS.match(last_attr(expr.func if isinstance(expr, ast.Call) else expr) or ""):
        return True  # self.fp32_params, self._master_params(): mixed precision's master copy
    if isinstance(expr, ast.Call):
        return last_attr(expr.func) in ("parameters", "named_parameters")
    if isinstance(expr, (ast.ListComp, ast.GeneratorExp)) and len(expr.generators) == 1:
        return _param_collection(expr.generators[0].iter, ctx, depth)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _param_collection(expr.left, ctx, depth) or _param_collection(
            expr.right, ctx, depth)
    if isinstance(expr, ast.Name) and depth < 2:
        value = ctx.lookup(expr.id)
        return isinstance(value, ast.expr) and _param_collection(value, ctx, depth + 1)
    if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
            and expr.value.id == "self" and depth < 2):  # self.params set in __init__
        held = ctx.value_of(expr)
        return isinstance(held, ast.expr) and _param_collection(held, ctx, depth + 1)
    return False


def _bind_loop(loop: ast.For, ctx: Ctx) -> None:
    """Remember loop variables that are parameters or optimizer param groups."""
    _bind_yielded(loop, ctx)
    it = loop.iter
    if isinstance(it, ast.Call) and last_attr(it.func) in ("enumerate", "list", "tuple",
                                                           "reversed", "sorted") and it.args:
        it = it.args[0]
    kind = ""
    if _param_collection(it, ctx):  # m.parameters(), lora_a + lora_b, [p for n, p in ...]
        kind = "params"
    elif (isinstance(it, ast.Call) and last_attr(it.func) in ("items", "values")
          and isinstance(it.func, ast.Attribute) and ctx.is_state_dict(it.func.value)
          and not _EMA_OWNER.search(ast.unparse(it.func.value))):
        kind = "params"  # for k, v in model.state_dict().items(): tensors share storage
    elif isinstance(it, ast.Subscript) and literal(it.slice) == "params":
        kind = "params"
    elif last_attr(it) == "param_groups":
        kind = "groups"
    elif (isinstance(it, ast.Call) and last_attr(it.func) == "values"
          and last_attr(it.func.value) == "state"):  # type: ignore[attr-defined]
        kind = "states"
    if not kind:
        return
    target = loop.target
    if isinstance(target, ast.Tuple) and target.elts:
        target = target.elts[-1]
    if isinstance(target, ast.Name):
        {"params": ctx.frame.params, "groups": ctx.frame.groups,
         "states": ctx.frame.states}[kind].add(target.id)


def _fetched_by_name(value: ast.expr) -> bool:
    """`getattr(builtins, "".join(...))`, `vars(builtins)[bytes(...).decode()]`,
    `builtins.__dict__["exec"]`: a callable fetched through a name string, not spelled."""
    if isinstance(value, ast.Call):
        return len(value.args) >= 2 and getattr(value.args[1], "folded", False)
    return isinstance(value, ast.Subscript) and namespace_entry(value) is not None

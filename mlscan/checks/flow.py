"""Static value flow across one file: what a name, parameter or config entry holds.

The walker knows what names hold in the functions enclosing the node being checked. An
insider spreads a value over several steps instead: `cfg = dict(_DEFAULTS)` in `train()`,
`_install_hooks(model, cfg)`, and in `_install_hooks` a hook multiplies by
`cfg["probe"]["gain"]`. `FileFlow` indexes the file once (module constants, each function's
single assignments, each local function's call sites) and `resolve()` follows a value through
locals, parameter defaults, the argument every call site passes, `dict(X)` copies and
constant keys of dict literals. Ambiguity (two different arguments, two assignments) stops
the search: a wrong value is worse than none.
"""

from __future__ import annotations

import ast

from mlscan.checks.fields import config_chain, field_default
from mlscan.checks.names import defaults_by_name, last_attr, literal, param_names
from mlscan.checks.nodes import child_nodes, subnodes

Function = ast.FunctionDef | ast.AsyncFunctionDef

_MAX_DEPTH = 8
_MAX_STEPS = 20_000
"""Resolution steps per file; beyond them values are unknown (bounded time on any input)."""


class FileFlow:
    def __init__(self, tree: ast.AST, path: str | None = None) -> None:
        self.path = path
        """The file's path: configuration declared beside it is read by `fields`."""
        self.module: dict[str, ast.expr | None] = {}
        """Module-level names assigned once (None: assigned more than once)."""
        self.functions: dict[str, list[Function]] = {}
        self.calls: dict[str, list[tuple[ast.Call, Function | None]]] = {}
        """Local function name -> (call, calling function) for `f(...)` and `self.f(...)`."""
        self._locals: dict[int, dict[str, ast.expr | None]] = {}
        self.parent: dict[int, Function] = {}
        self._owners: dict[int, Function] = {}
        """Node -> the innermost function holding it (a function holds itself)."""
        self._params: dict[tuple[int, str], tuple[ast.AST | None, Function | None]] = {}
        self._steps = 0
        self.classes: dict[str, list[ast.ClassDef]] = {}
        self.looped_calls: set[int] = set()
        """Calls written inside a `for`/`while` (of the same function)."""
        self.class_of: dict[int, ast.ClassDef] = {}
        """Method -> its class."""
        self.self_values: dict[tuple[str, str], list[tuple[ast.expr | None, Function]]] = {}
        """(class, attribute) -> every `self.attr = value` in its methods."""
        body = tree.body if isinstance(tree, ast.Module) else []
        for stmt in body:
            _collect_assign(stmt, self.module)
        self._index(tree, None)

    def _index(self, root: ast.AST, root_fn: Function | None) -> None:
        """One depth-first pass (an explicit stack, children in source order): owners,
        functions, classes, calls, looped calls and `self.x = ...` values."""
        owners, class_of = self._owners, self.class_of
        loops = (ast.For, ast.While, ast.AsyncFor)
        stack: list[tuple[ast.AST, Function | None, ast.ClassDef | None, bool]] = [
            (root, root_fn, None, False)]
        while stack:
            node, fn, cls, looped = stack.pop()
            todo: list[tuple[ast.AST, Function | None, ast.ClassDef | None, bool]] = []
            for child in child_nodes(node):
                t = type(child)
                if fn is not None:
                    owners[id(child)] = fn
                if t is ast.ClassDef:
                    self.classes.setdefault(child.name, []).append(child)  # type: ignore
                    todo.append((child, fn, child, False))  # type: ignore[arg-type]
                    continue
                if t is ast.FunctionDef or t is ast.AsyncFunctionDef:
                    self.functions.setdefault(child.name, []).append(child)  # type: ignore
                    owners[id(child)] = child  # type: ignore[assignment]
                    if fn is not None:
                        self.parent[id(child)] = fn
                    if cls is not None and fn is None:
                        class_of[id(child)] = cls
                    todo.append((child, child, None, False))  # type: ignore[arg-type]
                    continue
                if t is ast.Assign and fn is not None and id(fn) in class_of:
                    self._self_assign(child, fn)  # type: ignore[arg-type]
                elif t is ast.Call:
                    self._call(child, fn, looped)  # type: ignore[arg-type]
                todo.append((child, fn, None, looped or t in loops))
            stack.extend(reversed(todo))

    def _self_assign(self, child: ast.Assign, fn: Function) -> None:
        owner = self.class_of[id(fn)].name
        for target in child.targets:
            for t in subnodes(target):
                if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                        and t.value.id == "self"):
                    self.self_values.setdefault((owner, t.attr), []).append(
                        (child.value if t is target else None, fn))

    def _call(self, child: ast.Call, fn: Function | None, looped: bool) -> None:
        if (fn is not None and id(fn) in self.class_of
                and isinstance(child.func, ast.Attribute)
                and child.func.attr in ("register_buffer", "register_parameter")
                and len(child.args) >= 2 and isinstance(literal(child.args[0]), str)):
            # self.register_buffer("item_scale", mask): read later as self.item_scale
            self.self_values.setdefault((self.class_of[id(fn)].name, str(literal(
                child.args[0]))), []).append((child.args[1], fn))
        func = child.func
        if isinstance(func, ast.Name) or (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id in ("self", "cls")):
            self.calls.setdefault(last_attr(func), []).append((child, fn))
        if looped:
            self.looped_calls.add(id(child))

    def called_in_loop(self, name: str) -> bool:
        """Some call of local function `name` sits inside a loop (`estimate_loss()` in the
        training loop): whatever it does happens again and again."""
        return any(id(call) in self.looped_calls for call, _ in self.calls.get(name, ()))

    def owner(self, node: ast.AST) -> Function | None:
        """The innermost function whose body holds `node` (for checks decided after the
        walk, when the walker's frames are gone)."""
        return self._owners.get(id(node))

    def locals_of(self, fn: Function) -> dict[str, ast.expr | None]:
        known = self._locals.get(id(fn))
        if known is None:
            known = {}
            for node in subnodes(fn):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For,
                                     ast.With, ast.NamedExpr)):
                    _collect_assign(node, known)
            self._locals[id(fn)] = known
        return known

    def resolve(self, expr: ast.AST | None, fn: Function | None,
                depth: int = 0) -> tuple[ast.AST | None, Function | None]:
        """What `expr`, read inside `fn`, holds (and the function whose names it uses)."""
        self._steps += 1
        if expr is None or depth > _MAX_DEPTH or self._steps > _MAX_STEPS:
            return expr, fn  # (a budget per file: recursive call chains fan out)
        if isinstance(expr, ast.Name):
            found, scope = self._name(expr.id, fn, depth)
            return (found, scope) if found is not None else (expr, fn)
        if (isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)
                and expr.value.id == "self" and fn is not None):
            method: Function | None = fn
            while method is not None and id(method) not in self.class_of:
                method = self.parent.get(id(method))
            if method is not None:  # self._hard, set once in __init__ from a parameter
                cls = self.class_of[id(method)]
                values = self.self_values.get((cls.name, expr.attr), [])
                if len(values) == 1 and values[0][0] is not None:
                    return self.resolve(values[0][0], values[0][1], depth + 1)
                declared = class_field_default(cls, expr.attr) if not values else None
                if declared is not None:  # _NPY_OPTS = {...} in the class body
                    return self.resolve(declared, None, depth + 1)
            return expr, fn
        if isinstance(expr, ast.Attribute):  # self.cfg.recover: a config class's field default
            base, scope = self.resolve(expr.value, fn, depth + 1)
            if isinstance(base, ast.Call):
                given = next((k.value for k in base.keywords if k.arg == expr.attr), None)
                if given is not None and ((isinstance(base.func, ast.Name) and base.func.id in
                                          self.classes) or last_attr(base.func) in _NAMESPACES):
                    return self.resolve(given, scope, depth + 1)  # SimpleNamespace(calib=0.3)
                default = self._field_default(base.func.id, expr.attr) if isinstance(
                    base.func, ast.Name) else None
                if default is not None and given is None:
                    return self.resolve(default, None, depth + 1)
            elif config_chain(expr.value):  # self.ocfg.norm_decay: declared in a config file
                declared = field_default(self.path, expr.attr)
                if declared is not None:
                    return declared, None
            return expr, fn
        if isinstance(expr, ast.Subscript):
            key = literal(expr.slice)
            if isinstance(key, (str, int)) and not isinstance(key, bool):
                base, scope = self.resolve(expr.value, fn, depth + 1)
                if isinstance(base, ast.Dict):
                    for k, v in zip(base.keys, base.values, strict=True):
                        if k is not None and literal(k) == key:
                            return self.resolve(v, scope, depth + 1)
                if (isinstance(base, (ast.Tuple, ast.List)) and isinstance(key, int)
                        and -len(base.elts) <= key < len(base.elts)
                        and not any(isinstance(e, ast.Starred) for e in base.elts)):
                    return self.resolve(base.elts[key], scope, depth + 1)
            return expr, fn
        if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
                and expr.func.id == "dict" and len(expr.args) == 1 and not expr.keywords):
            inner, scope = self.resolve(expr.args[0], fn, depth + 1)  # dict(_DEFAULTS)
            return (inner, scope) if isinstance(inner, ast.Dict) else (expr, fn)
        if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
                and expr.func.attr in ("copy", "deepcopy") and not expr.keywords):
            source = expr.args[0] if expr.func.attr == "deepcopy" and expr.args else (
                expr.func.value if expr.func.attr == "copy" else None)
            inner, scope = self.resolve(source, fn, depth + 1)
            return (inner, scope) if isinstance(inner, ast.Dict) else (expr, fn)
        return expr, fn

    def _annotated_config(self, name: str, fn: Function) -> tuple[ast.AST | None, None]:
        """`def __init__(self, cfg: EvalConfig)` with no caller in this file and EvalConfig a
        class of this file: its fields hold their defaults (`EvalConfig()`)."""
        param = next((a for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)
                      if a.arg == name), None)
        ann = param.annotation if param is not None else None
        if isinstance(ann, ast.Name) and len(self.classes.get(ann.id, ())) == 1:
            return ast.Call(func=ast.Name(id=ann.id, ctx=ast.Load()), args=[], keywords=[]), None
        return None, None

    def _field_default(self, cls_name: str, field: str) -> ast.expr | None:
        classes = self.classes.get(cls_name, [])
        return class_field_default(classes[0], field) if len(classes) == 1 else None

    def _name(self, name: str, fn: Function | None,
              depth: int) -> tuple[ast.AST | None, Function | None]:
        scope = fn
        while scope is not None:
            local = self.locals_of(scope)
            if name in local and name in param_names(scope):
                return None, None  # `if weights_only is None: weights_only = False`
            if name in local:
                value = local[name]
                return self.resolve(value, scope, depth + 1) if value is not None else (None, None)
            if name in param_names(scope):
                return self._param(name, scope, depth)
            scope = self.parent.get(id(scope))
        value = self.module.get(name)
        if value is not None:
            return self.resolve(value, None, depth + 1)
        return None, None

    def _param(self, name: str, fn: Function,
               depth: int) -> tuple[ast.AST | None, Function | None]:
        """The argument every call site of `fn` passes for `name` (the default when none
        passes it); None when call sites disagree. Memoised; a parameter met again while it
        is being resolved (recursion) is unknown."""
        key = (id(fn), name)
        if key in self._params:
            return self._params[key]
        self._params[key] = (None, None)
        found = self._param_uncached(name, fn, depth)
        self._params[key] = found
        return found

    def _param_uncached(self, name: str, fn: Function,
                        depth: int) -> tuple[ast.AST | None, Function | None]:
        cls = self.class_of.get(id(fn)) if fn.name == "__init__" else None
        if cls is None and len(self.functions.get(fn.name, ())) != 1:
            return None, None
        params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
        method = bool(params) and params[0] in ("self", "cls")
        default = defaults_by_name(fn).get(name)
        found: list[tuple[ast.AST | None, Function | None]] = []
        sites = self.calls.get(cls.name if cls is not None else fn.name, [])
        if cls is not None:  # Det(...) -> __init__(self, ...): the arguments start after self
            sites = [(c, f) for c, f in sites if isinstance(c.func, ast.Name)]
        for call, caller in sites:
            if any(isinstance(a, ast.Starred) for a in call.args) or any(
                    k.arg is None for k in call.keywords):
                return None, None
            value: ast.expr | None = next((k.value for k in call.keywords if k.arg == name), None)
            if value is None and name in params:
                index = params.index(name) - (1 if method and (isinstance(
                    call.func, ast.Attribute) or cls is not None) else 0)
                if 0 <= index < len(call.args):
                    value = call.args[index]
            if value is None:
                value, caller = default, None
            if value is None:
                return None, None
            found.append(self.resolve(value, caller, depth + 1))
        if not found:  # no caller in this file: callers elsewhere decide, but a class built
            # from a config (registries, `build_from_cfg`) runs with its constructor defaults
            if cls is not None and default is not None:
                return self.resolve(default, None, depth + 1)
            return self._annotated_config(name, fn)
        first = ast.dump(found[0][0]) if found[0][0] is not None else ""
        if first and all(f[0] is not None and ast.dump(f[0]) == first for f in found[1:]):
            return found[0]
        return None, None


_NAMESPACES = frozenset({"SimpleNamespace", "Namespace", "EasyDict", "edict", "AttrDict",
                         "Box", "DotMap", "ConfigDict", "Munch"})


def class_field_default(cls: ast.ClassDef, field: str) -> ast.expr | None:
    """`recover: float = 1.05` (or `recover = 1.05`) in a class body: the field's default."""
    for stmt in cls.body:
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and stmt.target.id == field and stmt.value is not None):
            return stmt.value
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == field):
            return stmt.value
    return None


def _collect_assign(node: ast.AST, into: dict[str, ast.expr | None]) -> None:
    """Record `name = value`; a second binding of the same name makes it unknown (None)."""
    pairs: list[tuple[ast.expr, ast.expr | None]] = []
    if isinstance(node, ast.Assign):
        for target in node.targets:
            if (isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    and len(target.elts) == len(node.value.elts)):
                pairs.extend(zip(target.elts, node.value.elts, strict=True))
            else:
                pairs.append((target, node.value))
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        pairs.append((node.target, node.value))
    elif isinstance(node, ast.NamedExpr):
        pairs.append((node.target, node.value))
    elif isinstance(node, (ast.AugAssign, ast.For)):
        pairs.append((node.target, None))
    elif isinstance(node, ast.With):
        pairs.extend((it.optional_vars, None) for it in node.items if it.optional_vars)
    for target, value in pairs:
        for name in subnodes(target):
            if isinstance(name, ast.Name):
                known = name.id in into
                into[name.id] = None if known or name is not target else value

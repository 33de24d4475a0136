"""Rewrite reflective spellings into the plain ones the checks match, before the walk.

Insiders hide calls behind reflection: `setattr(torch.optim.AdamW, "step", f)` is
`torch.optim.AdamW.step = f`, `g.__setitem__("lr", v)` is `g["lr"] = v`, and
`getattr(m, _API["bwd"])` names a method through a module-level constant. One pass over the
tree folds these; it runs only when the source mentions them (a byte test), so ordinary
files pay nothing.
"""

from __future__ import annotations

import ast
import base64
import codecs
import copy
import re

from mlscan.checks.flow import FileFlow
from mlscan.checks.names import last_attr, literal, noop_lambda, param_names, root_name
from mlscan.checks.nodes import subnodes

TRIGGER = re.compile(r"setattr|__setitem__|sys\.modules\[|vars\(\w+\)\[|__dict__\[|locate\(|"
                     r"resolve_name\(|"
                     r"getattr\(|import_module|__import__|methodcaller|chr(?<!\wchr)(?!\w)|"
                     r"environ\.setdefault\(|np\.(place|put|putmask|copyto)\(|"
                     r"(environ\.get|getenv)\(_?[A-Z][A-Z0-9_]*[,)]|"
                     r"np\.\w+\([^)\n]*\bout=|torch\.\w+\([^\n]*\bout=|"
                     r"\.update\(\{|\.update\(\[\(|"
                     r"[\"']\.join\(|[A-Z0-9_]\[[\"']|else\s+[\w.]+\)\s*\(|"
                     r"operator\.|\.update\(\w+=|=\s*torch\.Tensor\.|(Tensor|ndarray)\.[a-z]\w*\(|\[[\"'][\w.-]+[\"']\]\(|"
                     r"[\"']\s*\+\s*[\"']|\{\s*(True|False)\s*:|[\"']\[::-1\]|reversed\([\"']|"
                     r"(?m:^[ \t]*(list\()?[\[{(][^\n]*\)[ \t]+for[ \t])")
"""(The walker resolves `_apply = getattr(builtins, "exec")` as an alias of builtins.exec once
the name is folded.)"""

_MAX_FOLD = 400
"""Longest folded string: names of attributes, not payloads (MLS4xx rules judge those)."""


def wanted(text: str) -> bool:
    return TRIGGER.search(text) is not None or _LOCAL_ALIAS.search(text) is not None


_KEY_DEFAULT = (r"=\s*[\"'](lr|exp_avg(_sq)?|momentum(_buffer)?|weight_decay|"
                r"betas)[\"']\s*[,)]")
"""An optimizer key as a parameter's default (`key: str = "lr"`), stored on self in __init__."""
_SPELLED_KEYS = re.compile(r"[\"']\.join\(|\[::-1\]|[\"']\s*\+\s*[\"']|[A-Z0-9_]\[[\"']|"
                           r"\[(self|cls)\._?[A-Z][A-Z0-9_]*\]|(vars\(\w+\)|__dict__)\[(?![\"'])|"
                           r"vars\(\w+\)\[[\"']|" + _KEY_DEFAULT)
"""Keys or table reads that `_fold_subscripts` can fold (the pass visits every node)."""


def normalize(tree: ast.Module, text: str | None = None) -> FileFlow | None:
    """With `text`, passes whose spellings do not occur in the source are skipped. Returns the
    file's value-flow index when a pass built one (the checks reuse it instead of indexing the
    file again)."""
    subscripts = text is None or _SPELLED_KEYS.search(text) is not None
    nodes: list[ast.AST] = []  # one walk of the original tree, shared by the passes below

    def all_nodes() -> list[ast.AST]:
        if not nodes:
            nodes.extend(subnodes(tree))
        return nodes

    assigns = _module_assigns(tree)
    consts = _module_constants(assigns)
    if text is None or _CLASS_KEY.search(text) or _INIT_KEY.search(text):
        consts.update(_class_constants(all_nodes(), consts))
    sources = dict(assigns)
    noops = _noops(tree)
    flow: list[FileFlow] = []  # built on first need
    unbound = {name: value.attr for name, value in sources.items()
               if isinstance(value, ast.Attribute) and ast.unparse(value.value) in (
                   _UNBOUND_OWNERS)}
    if text is None or _LOCAL_ALIAS.search(text):
        _inline_local_aliases(all_nodes(), consts)
    if text is None or "methodcaller(" in text or "__setitem__" in text:
        _inline_method_callers(tree, all_nodes())
    if subscripts and (text is None or _LOCAL_KEY.search(text)):
        _fold_local_keys(all_nodes(), consts)
    operator_names = frozenset(a.asname or a.name for stmt in tree.body
                               if isinstance(stmt, ast.Import) for a in stmt.names
                               if a.name == "operator")  # import operator as op
    if operator_names:
        for node in subnodes(tree):  # first: the statement rewrites below reuse these values
            _fold_operators(node, operator_names)
    tables = {name: {literal(k): v for k, v in zip(value.keys, value.values, strict=True)
                     if k is not None and isinstance(literal(k), str)}
              for name, value in sources.items() if isinstance(value, ast.Dict)}
    tables.update({name: {_ANY_KEY: value.value} for name, value in sources.items()
                   if isinstance(value, ast.DictComp) and len(value.generators) == 1})
    if tables:
        _inline_table_entries(all_nodes(), tables)
    choosers = text is None or _BOOL_TABLE.search(text) is not None
    modules = (text is None or "modules[" in text) and any(
        _module_lookup_name(n, consts) for n in all_nodes())  # (sys.modules[name]: nothing)
    if choosers or modules:  # (before the statement pass: `{True: f, False: g}[c]()` is a
        for node in nodes if nodes else subnodes(tree):  # chosen call)
            if choosers:
                _bool_tables(node)
            if modules:
                _module_lookups(node, consts)
    # (the walk made for the passes above is reused; statements rewritten below are walked
    # on their own, since a precomputed list does not see them)
    for node in nodes if nodes else subnodes(tree):
        if isinstance(node, ast.Call):
            _fold_env_key(node, consts)
            _fold_getattr(node, consts, sources)
            _fold_locate(node, consts)
            _dispatch(node, tables)
            _bind_method(node, unbound)
            _fold_by_flow(node, tree, flow)
        if subscripts:
            _fold_subscripts(node, consts)
        if subscripts and isinstance(node, ast.Dict):  # {"allow_" + "pickle": True}
            node.keys = [ast.copy_location(ast.Constant(k), key) if key is not None and not (
                isinstance(key, ast.Constant)) and (k := const_text(key, consts)) is not None
                else key for key in node.keys]
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list):
                for i, stmt in reversed(list(enumerate(stmts))):
                    rewritten = _statement(stmt, consts, noops, operator_names, stmts[:i])
                    if rewritten is None:
                        continue
                    news = rewritten if isinstance(rewritten, list) else [rewritten]
                    stmts[i:i + 1] = news
                    if nodes and subscripts:
                        for new in news:
                            for part in subnodes(new):
                                _fold_subscripts(part, consts)
    for node in nodes if nodes else subnodes(tree):
        if isinstance(node, ast.JoinedStr):
            _plain_folded_parts(node)
    return flow[0] if flow else None


def _fold_env_key(call: ast.Call, consts: dict[str, object]) -> None:
    """`os.environ.get(_PARTITION_VAR)` with `_PARTITION_VAR = "SLURM_JOB_PARTITION"` at module
    level -> the key spelled out, so triggers know which variable is read."""
    func = call.func
    if not (call.args and isinstance(call.args[0], ast.Name) and isinstance(
            consts.get(call.args[0].id), str) and isinstance(func, ast.Attribute)
            and (func.attr == "getenv" or (func.attr == "get"
                                            and last_attr(func.value) == "environ"))):
        return
    key = consts[call.args[0].id]
    if isinstance(key, str):
        call.args[0] = ast.copy_location(ast.Constant(key), call.args[0])


def _plain_folded_parts(node: ast.JoinedStr) -> None:
    """`f"{BOLD}x"` with BOLD folded to "\\x1b[1m": a string constant left inside `{}` cannot
    be unparsed (a backslash in an f-string expression), so it becomes literal text."""
    node.values = [ast.copy_location(ast.Constant(v.value.value), v) if (
        isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Constant)
        and isinstance(v.value.value, str) and v.conversion == -1 and v.format_spec is None)
        else v for v in node.values]


_CLASS_KEY = re.compile(r"(self|cls)\._?[A-Z][A-Z0-9_]*\b")
"""Class constants read through self/cls (`state[self._SECOND_MOMENT]`)."""
_INIT_KEY = re.compile(r"self\.\w+\s*=\s*[\"'][^\"'\n]*[\"']\s*\+|self\.\w+\s*=\s*[\"'][^\"'\n]*"
                       r"[\"']\.join\(|" + _KEY_DEFAULT)
"""Keys assembled once in `__init__` (`self._sq_key = "exp_avg" + "_sq"`)."""
_LOCAL_KEY = re.compile(r"(?m)^\s+\w+\s*=\s*(?:[\"'][^\"'\n]*[\"']\s*\+|"
                        r"[\"'][^\"'\n]*[\"']\.join\(|"
                        r"bytes\(|bytearray\(|codecs\.|base64\.|\w+\s*\+\s*[\"']|[\"'][\w.]+[\"']\[::-1\])")
"""A local spelled by concatenation, join or decoding (`key = "LD_" + "PRE" + "LOAD"`)."""
_LOCAL_ALIAS = re.compile(r"(?m)=\s*getattr\(|=\s*[\w.]+\.(\w+_|sleep|kill|killpg|_exit|exit|"
                          r"manual_seed\w*|seed|system|remove|unlink|rmtree|register_\w*hook|set_state|"
                          r"set_rng_state|setstate|destroy_process_group)\s*$")


def _holding(nodes: list[ast.AST], lines: set[int]) -> list[ast.FunctionDef |
                                                             ast.AsyncFunctionDef]:
    """The innermost functions whose body spans one of `lines` (candidate assignments)."""
    found: dict[int, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for fn in nodes:
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            end = getattr(fn, "end_lineno", None) or fn.lineno
            for line in lines:
                inner = found.get(line)
                if fn.lineno <= line <= end and (inner is None or inner.lineno < fn.lineno):
                    found[line] = fn
    unique = {id(fn): fn for fn in found.values()}
    return list(unique.values())


def _inline_local_aliases(nodes: list[ast.AST], consts: dict[str, object]) -> None:
    """`shrink = getattr(p.data, "mul_")` (or `= p.data.mul_`), then `shrink(0.999)`, in one
    function: the call is rewritten to `p.data.mul_(0.999)`, so the rules see the method."""
    lines = {n.lineno for n in nodes if isinstance(n, ast.Assign) and len(n.targets) == 1
             and isinstance(n.targets[0], ast.Name)
             and isinstance(n.value, (ast.Attribute, ast.Call))
             and _method_ref(n.value, consts) is not None}
    if not lines:
        return
    modules = {(a.asname or a.name).split(".")[0] for n in nodes
               if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    for fn in _holding(nodes, lines):
        stores: dict[str, int] = {}
        aliases: dict[str, tuple[int, ast.Attribute]] = {}
        for node in subnodes(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                stores[node.id] = stores.get(node.id, 0) + 1
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                    node.targets[0], ast.Name):
                method = _method_ref(node.value, consts)
                if method is not None and root_name(method) not in modules:
                    # (module functions: the walker's aliases keep how they were named)
                    aliases[node.targets[0].id] = (node.lineno, method)
        if not aliases:
            continue
        for name in [n for n in aliases if stores.get(n) != 1 or n in param_names(fn)]:
            del aliases[name]
        for node in subnodes(fn):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                    node.func.id in aliases and aliases[node.func.id][0] < node.lineno):
                node.func = ast.copy_location(copy.deepcopy(aliases[node.func.id][1]),
                                              node.func)
                ast.fix_missing_locations(node.func)


def _inline_method_callers(tree: ast.Module, nodes: list[ast.AST]) -> None:
    """`attach = operator.methodcaller("register_forward_hook", f)` bound once (in a function
    or at module level), then `attach(module)`: the call becomes
    `operator.methodcaller(...)(module)`, which `_fold_getattr` turns into the method call.
    `put = functools.partial(os.environ.__setitem__, "KEY")` then `put(v)` becomes
    `os.environ.__setitem__("KEY", v)`, which the statement pass turns into the write."""
    scopes: list[ast.AST] = [tree, *(n for n in nodes if isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef)))]
    for scope in scopes:
        # (in a function, also under an `if`: `if dist.is_initialized(): release = ...`)
        body = scope.body if isinstance(scope, ast.Module) else [
            n for n in subnodes(scope) if isinstance(n, ast.Assign)]
        callers: dict[str, ast.Call] = {}
        setters: dict[str, ast.Call] = {}  # put = partial(os.environ.__setitem__, "KEY")
        for stmt in body:
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)
                    and last_attr(stmt.value.func) == "methodcaller" and stmt.value.args):
                callers[stmt.targets[0].id] = stmt.value
            elif (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                  and isinstance(stmt.targets[0], ast.Name) and isinstance(stmt.value, ast.Call)
                  and last_attr(stmt.value.func) == "partial" and len(stmt.value.args) == 2
                  and isinstance(stmt.value.args[0], ast.Attribute)
                  and stmt.value.args[0].attr == "__setitem__"):
                setters[stmt.targets[0].id] = stmt.value
        for node in subnodes(scope) if setters else ():
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in setters and len(node.args) == 1 and not node.keywords):
                bound = setters[node.func.id]
                node.func = ast.copy_location(copy.deepcopy(bound.args[0]), node.func)
                node.args = [copy.deepcopy(bound.args[1]), node.args[0]]
        if not callers:
            continue
        stores = [n.id for n in subnodes(scope) if isinstance(n, ast.Name)
                  and isinstance(n.ctx, ast.Store) and n.id in callers]
        for name in [n for n in callers if stores.count(n) != 1]:
            del callers[name]
        for node in subnodes(scope):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in callers and len(node.args) == 1 and not node.keywords):
                node.func = ast.copy_location(copy.deepcopy(callers[node.func.id]), node.func)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "map" and len(node.args) == 2
                  and isinstance(node.args[0], ast.Name) and node.args[0].id in callers):
                # list(map(setter, groups)) with setter = methodcaller("__setitem__", k, v)
                node.args[0] = ast.copy_location(copy.deepcopy(callers[node.args[0].id]),
                                                 node.args[0])


def _fold_local_keys(nodes: list[ast.AST], consts: dict[str, object]) -> None:
    """`key = "LD_" + "PRE" + "LOAD"` once in a function, then `env[key] = ...`: the key is
    folded (and marked as spelled indirectly), as module constants are."""
    lines = {n.lineno for n in nodes if isinstance(n, ast.Assign) and len(n.targets) == 1
             and isinstance(n.targets[0], ast.Name) and isinstance(n.value, (
                 ast.BinOp, ast.Call, ast.Subscript))
             and (v := const_text(n.value, consts)) is not None and v.isidentifier()}
    if not lines:
        return
    for fn in _holding(nodes, lines):
        stores: dict[str, int] = {}
        spelled: dict[str, str] = {}
        for node in subnodes(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                stores[node.id] = stores.get(node.id, 0) + 1
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, (ast.BinOp, ast.Call, ast.Subscript))):
                value = const_text(node.value, consts)
                if value is not None and value.isidentifier():
                    spelled[node.targets[0].id] = value
        keys = {k: v for k, v in spelled.items() if stores.get(k) == 1}
        if not keys:
            continue
        for node in subnodes(fn):
            if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name)
                    and node.slice.id in keys):
                folded = ast.copy_location(ast.Constant(keys[node.slice.id]), node.slice)
                folded.folded = True  # type: ignore[attr-defined]
                node.slice = folded
            elif (isinstance(node, ast.Call) and (
                    (isinstance(node.func, ast.Name)
                     and node.func.id in ("getattr", "setattr", "delattr"))
                    or last_attr(node.func) in ("setitem", "getitem", "delitem"))
                  and len(node.args) >= 2
                  and isinstance(node.args[1], ast.Name) and node.args[1].id in keys):
                # name = "all_" + "reduce"; setattr(dist, name, wrapper)
                folded = ast.copy_location(ast.Constant(keys[node.args[1].id]), node.args[1])
                folded.folded = True  # type: ignore[attr-defined]
                node.args[1] = folded


_ALIASED_METHOD = re.compile(r"\w+_$|sleep$|kill|_exit$|exit$|manual_seed|seed$|system$|remove$|"
                             r"unlink$|rmtree$|register_\w*hook$|set_state$|set_rng_state$|"
                             r"setstate$|destroy_process_group$")


def _method_ref(value: ast.expr, consts: dict[str, object]) -> ast.Attribute | None:
    """`p.data.mul_` or `getattr(p.data, "mul_")` (a constant name): the method referred to
    (methods named like the ones rules judge; getattr with a folded name, any)."""
    called_by_name = isinstance(value, ast.Call)
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and (
            value.func.id == "getattr" and len(value.args) == 2 and not value.keywords):
        attr = const_text(value.args[1], consts)
        if attr is None or not attr.isidentifier():
            return None
        value = ast.Attribute(value=value.args[0], attr=attr, ctx=ast.Load())
    if not isinstance(value, ast.Attribute) or not (
            called_by_name or _ALIASED_METHOD.match(value.attr)):
        return None
    return value if root_name(value) else None


def _module_assigns(tree: ast.Module) -> list[tuple[str, ast.expr]]:
    """(name, value) of module-level `NAME = value` and `A, B = x, y` assignments."""
    pairs: list[tuple[str, ast.expr]] = []
    for stmt in tree.body:
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and stmt.value is not None):  # _READERS: Dict[str, Callable] = {...}
            pairs.append((stmt.target.id, stmt.value))
            continue
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
            continue
        target = stmt.targets[0]
        if isinstance(target, ast.Name):
            pairs.append((target.id, stmt.value))
        elif (isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple)
              and len(target.elts) == len(stmt.value.elts)):  # _m, _f = "...", "..."
            pairs += [(t.id, v) for t, v in zip(target.elts, stmt.value.elts, strict=True)
                      if isinstance(t, ast.Name)]
    return pairs


def _module_constants(pairs: list[tuple[str, ast.expr]]) -> dict[str, object]:
    """Module-level `NAME = "str"` and `NAME = {"k": "str", ...}` bound exactly once."""
    seen: dict[str, int] = {}
    values: dict[str, object] = {}
    for name, expr in pairs:
        seen[name] = seen.get(name, 0) + 1
        value = const_text(expr, values)
        if value is not None:
            values[name] = value
        elif isinstance(expr, (ast.List, ast.Tuple)) and expr.elts and all(
                isinstance(e, ast.Constant) and type(e.value) is int and 0 <= e.value < 128
                for e in expr.elts):  # character codes, decoded with bytes(...)
            values[name] = tuple(literal(e) for e in expr.elts)
        elif (names := _str_tuple(expr, values)) is not None:
            values[name] = names
        elif isinstance(expr, ast.Dict):
            table: dict[str, str] = {}
            for key, item in zip(expr.keys, expr.values, strict=True):
                k, v = const_text(key, values) if key else None, const_text(item, values)
                if isinstance(k, str) and isinstance(v, str):
                    table[k] = v
            if table:
                values[name] = table
    return {k: v for k, v in values.items() if seen.get(k) == 1}


def _str_tuple(expr: ast.expr, consts: dict[str, object]) -> tuple[str, ...] | None:
    """`("so", "metsys")`: a short tuple of known strings, read by index."""
    if not isinstance(expr, (ast.Tuple, ast.List)) or not 0 < len(expr.elts) <= 16:
        return None
    items = [const_text(e, consts) for e in expr.elts]
    return tuple(i for i in items if i is not None) if all(
        i is not None for i in items) else None


def _class_constants(nodes: list[ast.AST], consts: dict[str, object]) -> dict[str, object]:
    """`_SECOND_MOMENT = "exp_avg" + "_sq"` in a class body, read as `self._SECOND_MOMENT`:
    keyed `.NAME`, kept only when one class binds the name and no method rebinds it."""
    found: dict[str, object] = {}
    seen: dict[str, int] = {}
    for cls in (n for n in nodes if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(
                    stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                seen[name] = seen.get(name, 0) + 1
                value: object = const_text(stmt.value, consts)
                if value is None:
                    value = _str_tuple(stmt.value, consts)  # _TOOL = ("so", "metsys")
                if value is not None:
                    found["." + name] = value
    rebound = {n.attr for n in nodes if isinstance(n, ast.Attribute)
               and isinstance(n.ctx, ast.Store)} if found else set()
    kept = {k: v for k, v in found.items() if seen[k[1:]] == 1 and k[1:] not in rebound}
    kept.update(_init_constants(nodes, consts))
    return kept


_OPTIMIZER_KEYS = frozenset({"lr", "exp_avg", "exp_avg_sq", "momentum", "momentum_buffer",
                             "weight_decay", "betas"})


def _init_constants(nodes: list[ast.AST], consts: dict[str, object]) -> dict[str, object]:
    """`self._sq_key = "exp_avg" + "_sq"` in `__init__`, stored once in the whole file: keyed
    `self._sq_key` (read only through `self.`, not through any object's attribute)."""
    found: dict[str, object] = {}
    for fn in (n for n in nodes if isinstance(n, ast.FunctionDef) and n.name == "__init__"):
        defaults = {a.arg: d.value for a, d in zip(
            fn.args.args[len(fn.args.args) - len(fn.args.defaults):], fn.args.defaults,
            strict=True) if isinstance(d, ast.Constant) and d.value in _OPTIMIZER_KEYS}
        for stmt in fn.body:
            if (defaults and isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(target := stmt.targets[0], ast.Attribute)
                    and isinstance(target.value, ast.Name) and target.value.id == "self"
                    and isinstance(stmt.value, ast.Name) and stmt.value.id in defaults):
                found["self." + target.attr] = defaults[stmt.value.id]  # key: str = "lr"
                continue
            if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(target := stmt.targets[0], ast.Attribute)
                    and isinstance(target.value, ast.Name) and target.value.id == "self"
                    and isinstance(stmt.value, (ast.BinOp, ast.Call))
                    and (value := const_text(stmt.value, consts)) is not None):
                found["self." + target.attr] = value
    if not found:
        return {}
    stores: dict[str, int] = {}
    for n in nodes:
        if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store):
            stores[n.attr] = stores.get(n.attr, 0) + 1
    return {k: v for k, v in found.items() if stores.get(k[5:], 0) == 1}


def _sliced_pieces(comp: ast.GeneratorExp | ast.ListComp,
                   consts: dict[str, object]) -> tuple[str, ...] | None:
    """`w[0] for w in ("ema", "xyxy")` (also `w[i:j]`, `w[::-1]`): one piece of each constant
    string, taken by a constant index or slice."""
    if len(comp.generators) != 1 or comp.generators[0].ifs:
        return None
    gen = comp.generators[0]
    words = consts.get(gen.iter.id) if isinstance(gen.iter, ast.Name) else _str_tuple(
        gen.iter, consts)
    elt = comp.elt
    if not (isinstance(words, tuple) and isinstance(gen.target, ast.Name)
            and isinstance(elt, ast.Subscript) and isinstance(elt.value, ast.Name)
            and elt.value.id == gen.target.id and all(isinstance(w, str) for w in words)):
        return None
    if isinstance(elt.slice, ast.Slice):
        bounds: list[int | None] = []
        for b in (elt.slice.lower, elt.slice.upper, elt.slice.step):
            value = literal(b) if b is not None else None
            if value is not None and not isinstance(value, int):
                return None
            bounds.append(value)
        cut = slice(bounds[0], bounds[1], bounds[2])
        return tuple(str(w)[cut] for w in words)
    index = literal(elt.slice)
    if not isinstance(index, int) or not all(-len(str(w)) <= index < len(str(w)) for w in words):
        return None
    return tuple(str(w)[index] for w in words)


def const_text(expr: ast.AST | None, consts: dict[str, object]) -> str | None:
    """A string known before run time: literals, module and class constants, `+` and
    `"".join`."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value if len(expr.value) <= _MAX_FOLD else None
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        value = consts.get("." + expr.attr)  # self._KEY, cls._KEY, Trainer._KEY
        if value is None and expr.value.id == "self":
            value = consts.get("self." + expr.attr)  # set once in __init__
        return value if isinstance(value, str) else None
    if isinstance(expr, ast.Name):
        value = consts.get(expr.id)
        return value if isinstance(value, str) else None
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "join" and len(expr.args) == 1
            and isinstance(rev := expr.args[0], ast.Call) and isinstance(rev.func, ast.Name)
            and rev.func.id == "reversed" and len(rev.args) == 1):
        sep, text = const_text(expr.func.value, consts), const_text(rev.args[0], consts)
        return sep.join(reversed(text)) if sep is not None and text is not None else None
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "join" and len(expr.args) == 1
            and isinstance(expr.func.value, ast.Constant)
            and isinstance(expr.func.value.value, str)):  # ".".join(_PARTS), "".join(("ex", "ec"))
        seq = expr.args[0]
        parts = consts.get(seq.id) if isinstance(seq, ast.Name) else _str_tuple(seq, consts)
        if parts is None and isinstance(seq, (ast.GeneratorExp, ast.ListComp)):
            parts = _sliced_pieces(seq, consts)  # "".join(w[0] for w in ("ema", "xyxy", ...))
        if isinstance(parts, tuple) and all(isinstance(p, str) for p in parts):
            return _short(expr.func.value.value.join(parts))
    if (isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Slice)
            and expr.slice.lower is None and expr.slice.upper is None
            and literal(expr.slice.step) == -1):
        text = const_text(expr.value, consts)  # "HTAPNOHTYP"[::-1]
        return text[::-1] if text is not None else None
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, (ast.Name, ast.Attribute)) and (
            isinstance(index := literal(expr.slice), int)):  # _TOOL[1], self._TOOL[1]
        names = consts.get(expr.value.id) if isinstance(expr.value, ast.Name) else consts.get(
            "." + expr.value.attr) if isinstance(expr.value.value, ast.Name) else None
        item = names[index] if isinstance(names, tuple) and -len(names) <= index < len(
            names) else None
        return item if isinstance(item, str) else None
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
        table = consts.get(expr.value.id)
        key = const_text(expr.slice, consts)
        if isinstance(table, dict) and key is not None:
            value = table.get(key)
            return value if isinstance(value, str) else None
        return None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left, right = const_text(expr.left, consts), const_text(expr.right, consts)
        if left is not None and right is not None and len(left) + len(right) <= _MAX_FOLD:
            return left + right
        return None
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "decode" and isinstance(expr.func.value, ast.Call)
            and isinstance(expr.func.value.func, ast.Name)
            and expr.func.value.func.id in ("bytes", "bytearray") and expr.func.value.args):
        seq = expr.func.value.args[0]
        table = consts.get(seq.id) if isinstance(seq, ast.Name) else None
        if isinstance(table, tuple) and all(type(c) is int for c in table):
            # bytes(_CODES).decode() with _CODES = [105, 109, ...]
            return bytes(table).decode() if len(table) <= _MAX_FOLD else None
        if not isinstance(seq, (ast.List, ast.Tuple)):
            return None
        codes = [e.value for e in seq.elts
                 if isinstance(e, ast.Constant) and isinstance(e.value, int)
                 and not isinstance(e.value, bool) and 0 <= e.value < 128]
        if len(codes) == len(seq.elts):
            return bytes(codes).decode()  # bytes((101, 120, 101, 99)).decode() == "exec"
        return None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):  # "add_%s" % "scalar"
        template = const_text(expr.left, consts)
        items = expr.right.elts if isinstance(expr.right, ast.Tuple) else [expr.right]
        values = [const_text(e, consts) for e in items]
        if template is not None and not re.search(r"%[^s%]", template) and all(
                v is not None for v in values):
            try:
                return _short(template % tuple(values))
            except (TypeError, ValueError):
                return None
        return None
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "format" and not expr.keywords):  # "{}_{}".format("LD", ..)
        template = const_text(expr.func.value, consts)
        values = [const_text(e, consts) for e in expr.args]
        if template is not None and not re.search(r"\{[^}]*[:!.\[]", template) and all(
                v is not None for v in values):
            try:
                return _short(template.format(*values))
            except (IndexError, KeyError, ValueError):
                return None
        return None
    if isinstance(expr, ast.Call):
        folded = _decoded(expr, consts)
        if folded is not None and len(folded) <= _MAX_FOLD:
            return folded
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "join" and len(expr.args) == 1):
        chars = _char_codes(expr.args[0])  # "".join(map(chr, (101, 120, 101, 99)))
        sep = const_text(expr.func.value, consts)
        if chars is not None and sep is not None and len(chars) <= _MAX_FOLD:
            return sep.join(chr(c) for c in chars)
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "join" and len(expr.args) == 1
            and isinstance(expr.args[0], (ast.List, ast.Tuple))):
        sep = const_text(expr.func.value, consts)
        parts = [const_text(e, consts) for e in expr.args[0].elts]
        if sep is not None and all(p is not None for p in parts):
            joined = sep.join(p for p in parts if p is not None)
            return joined if len(joined) <= _MAX_FOLD else None
    return None


_NUMPY_SETTERS = {"place": (0, 1, 2), "put": (0, 1, 2), "putmask": (0, 1, 2)}


_BOOL_TABLE = re.compile(r"\{\s*(True|False)\s*:|\}\s*\.get\(")


def _bool_tables(node: ast.AST) -> None:
    """`{True: run_dir, False: tmp}[date.today() >= cutoff]` -> `run_dir if ... else tmp`:
    a choice by a condition, spelled as a table lookup (also `{0: f}.get(rank, noop)`)."""
    for field, child in ast.iter_fields(node):
        items = child if isinstance(child, list) else [child]
        for i, item in enumerate(items):
            if (isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute)
                    and item.func.attr == "get" and isinstance(item.func.value, ast.Dict)
                    and len(item.func.value.keys) == 1 and item.func.value.keys[0] is not None
                    and len(item.args) == 2 and not item.keywords):
                # {0: dist.barrier}.get(rank, noop) -> dist.barrier if rank == 0 else noop
                test = ast.Compare(left=item.args[0], ops=[ast.Eq()],
                                   comparators=[item.func.value.keys[0]])
                chosen = ast.copy_location(ast.IfExp(
                    test=ast.copy_location(test, item), body=item.func.value.values[0],
                    orelse=item.args[1]), item)
                if isinstance(child, list):
                    child[i] = chosen
                else:
                    setattr(node, field, chosen)
                continue
            if not (isinstance(item, ast.Subscript) and isinstance(item.value, ast.Dict)
                    and isinstance(item.ctx, ast.Load) and len(item.value.keys) == 2):
                continue
            entries = {literal(k): v for k, v in zip(item.value.keys, item.value.values,
                                                     strict=True) if k is not None}
            if set(entries) != {True, False} or any(
                    type(literal(k)) is not bool for k in item.value.keys if k is not None):
                continue
            new = ast.copy_location(ast.IfExp(test=item.slice, body=entries[True],
                                              orelse=entries[False]), item)
            if isinstance(child, list):
                child[i] = new
            else:
                setattr(node, field, new)


def _module_lookup_name(node: ast.AST, consts: dict[str, object]) -> str | None:
    """The module a `sys.modules["time"]` read names (None for anything else)."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "modules"
            and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
        return None
    name = const_text(node.slice, consts)
    return name if name is not None and all(p.isidentifier() for p in name.split(".")) else None


def _module_lookups(node: ast.AST, consts: dict[str, object]) -> None:
    """`sys.modules["time"]` -> `time`, `sys.modules["torch.distributed"]` ->
    `torch.distributed`: a module fetched from the import table by name. (An attribute set
    on it, `sys.modules["torch.distributed"].X = stub`, is how a package fills in a missing
    backend: left alone.)"""
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
        return
    for field, child in ast.iter_fields(node):
        items = child if isinstance(child, list) else [child]
        for i, item in enumerate(items):
            name = _module_lookup_name(item, consts)
            if name is None:
                continue
            parts = name.split(".")
            new: ast.expr = ast.Name(id=parts[0], ctx=ast.Load())
            for part in parts[1:]:
                new = ast.Attribute(value=new, attr=part, ctx=ast.Load())
            new = ast.fix_missing_locations(ast.copy_location(new, item))
            if isinstance(child, list):
                child[i] = new
            else:
                setattr(node, field, new)


def _numpy_write(call: ast.Call) -> tuple[ast.expr, ast.expr] | None:
    """numpy's in-place writers as the assignments they are: `np.place(a, m, v)` and
    `np.put(a, idx, v)` -> `a[m] = v`; `np.copyto(dst, src, where=m)` -> `dst[m] = src`;
    `np.negative(y, out=y, where=m)` -> `y[m] = np.negative(y)`."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id in ("np", "numpy")):
        return None
    where = next((k.value for k in call.keywords if k.arg == "where"), None)
    out = next((k.value for k in call.keywords if k.arg == "out"), None)
    if func.attr in _NUMPY_SETTERS and len(call.args) == 3:
        array, index, value = call.args
    elif func.attr == "copyto" and len(call.args) == 2:
        array, value = call.args
        if where is None and isinstance(array, ast.Subscript):  # copyto(x[:4], patch)
            return ast.Subscript(value=array.value, slice=array.slice, ctx=ast.Store()), value
        index = where if where is not None else ast.Slice()
    elif out is not None and not isinstance(out, ast.Tuple) and call.args:
        array = out
        value = _as_operator(func.attr, call.args) or ast.Call(func=func, args=call.args, keywords=[
            k for k in call.keywords if k.arg not in ("out", "where")])
        if where is None:
            return ast.Name(id=out.id, ctx=ast.Store()) if isinstance(out, ast.Name) else (
                ast.Subscript(value=out, slice=ast.Slice(), ctx=ast.Store())), value
        index = where
    else:
        return None
    return ast.Subscript(value=array, slice=index, ctx=ast.Store()), value


_UFUNC_OPS: dict[str, ast.operator] = {
    "add": ast.Add(), "subtract": ast.Sub(), "multiply": ast.Mult(), "divide": ast.Div(),
    "true_divide": ast.Div()}


def _as_operator(name: str, args: list[ast.expr]) -> ast.expr | None:
    """`np.subtract(1.0, y)` as `1.0 - y`, `np.negative(r)` as `-r`: the shapes checks know."""
    if name == "negative" and len(args) == 1:
        return ast.UnaryOp(op=ast.USub(), operand=args[0])
    if name in _UFUNC_OPS and len(args) == 2:
        return ast.BinOp(left=args[0], op=_UFUNC_OPS[name], right=args[1])
    return None


def _short(text: str) -> str | None:
    return text if len(text) <= _MAX_FOLD else None


def _char_codes(expr: ast.expr) -> list[int] | None:
    """`map(chr, (101, 120))`, `(chr(c) for c in [101, 120])`, `[chr(101), chr(120)]`."""
    seq: ast.expr | None = None
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "map"
            and len(expr.args) == 2 and isinstance(expr.args[0], ast.Name)
            and expr.args[0].id == "chr"):
        seq = expr.args[1]
    elif (isinstance(expr, (ast.GeneratorExp, ast.ListComp)) and len(expr.generators) == 1
          and isinstance(expr.elt, ast.Call) and isinstance(expr.elt.func, ast.Name)
          and expr.elt.func.id == "chr"):
        seq = expr.generators[0].iter
    elif isinstance(expr, (ast.List, ast.Tuple)) and expr.elts and all(
            isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "chr"
            and len(e.args) == 1 for e in expr.elts):
        seq = ast.Tuple(elts=[e.args[0] for e in expr.elts], ctx=ast.Load())  # type: ignore[attr-defined]
    if not isinstance(seq, (ast.List, ast.Tuple)):
        return None
    codes = [e.value for e in seq.elts if isinstance(e, ast.Constant)
             and isinstance(e.value, int) and not isinstance(e.value, bool)
             and 0 <= e.value < 0x110000]
    return codes if len(codes) == len(seq.elts) else None


def _decoded(expr: ast.Call, consts: dict[str, object]) -> str | None:
    """`bytes.fromhex("7069636b6c65").decode()`, `base64.b64decode("cGlja2xl").decode()`,
    `codecs.decode("cvpxyr", "rot13")`: a short name hidden behind an encoding."""
    func = expr.func
    if not isinstance(func, ast.Attribute):
        return None
    try:
        if func.attr == "decode" and isinstance(func.value, ast.Call) and func.value.args:
            inner = func.value
            text = const_text(inner.args[0], consts)
            attr = inner.func.attr if isinstance(inner.func, ast.Attribute) else ""
            if text is None:
                return None
            if attr == "fromhex":
                return bytes.fromhex(text).decode()
            if attr in ("b64decode", "urlsafe_b64decode"):
                return base64.b64decode(text, validate=True).decode()
            return None
        if (func.attr == "decode" and isinstance(func.value, ast.Name)
                and func.value.id == "codecs" and len(expr.args) == 2
                and const_text(expr.args[1], consts) in ("rot13", "rot_13")):
            text = const_text(expr.args[0], consts)
            return codecs.decode(text, "rot13") if text is not None else None
    except (ValueError, UnicodeDecodeError):
        return None
    return None


_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)+$")


def _fold_locate(call: ast.Call, consts: dict[str, object]) -> None:
    """`pydoc.locate("os.system")(cmd)`, `pkgutil.resolve_name(name)(x)` with a name known
    before run time -> `os.system(cmd)`: an import-and-getattr in one call."""
    func = call.func
    if not (isinstance(func, ast.Call) and len(func.args) == 1
            and last_attr(func.func) in ("locate", "resolve_name")):
        return
    text = const_text(func.args[0], consts)
    if text is None or not _DOTTED.match(text.replace(":", ".")):
        return
    dotted = ast.parse(text.replace(":", "."), mode="eval").body
    call.func = ast.copy_location(dotted, func)
    for node in ast.walk(call.func):
        ast.copy_location(node, func)


def _fold_getattr(call: ast.Call, consts: dict[str, object],
                  consts_src: dict[str, ast.expr] | None = None) -> None:
    consts_src = consts_src or {}
    inner = call.func
    if (isinstance(inner, ast.Call) and last_attr(inner.func) == "methodcaller" and inner.args
            and len(call.args) == 1 and not call.keywords):
        method = const_text(inner.args[0], consts)  # methodcaller("set_rng_state", s)(torch)
        if method is not None and method.isidentifier():
            call.func = ast.copy_location(ast.Attribute(
                value=call.args[0], attr=method, ctx=ast.Load()), inner)
            call.args, call.keywords = inner.args[1:], inner.keywords
        return
    if (isinstance(call.func, (ast.Name, ast.Attribute))
            and last_attr(call.func) in ("import_module", "__import__") and call.args
            and not isinstance(call.args[0], ast.Constant)):
        module = const_text(call.args[0], consts)
        if module is not None and all(p.isidentifier() for p in module.split(".")):
            source = call.args[0]
            if isinstance(source, ast.Name):
                source = consts_src.get(source.id, source)
            call.args[0] = ast.copy_location(ast.Constant(module), call.args[0])
            if any(isinstance(n, (ast.Call, ast.BinOp, ast.Slice)) for n in subnodes(source)):
                # assembled, not merely named by a constant (`import_module(BACKEND)`)
                call.args[0].folded = True  # type: ignore[attr-defined]
        return
    if (isinstance(call.func, ast.Name) and call.func.id in ("getattr", "setattr", "hasattr")
            and len(call.args) >= 2 and not isinstance(call.args[1], ast.Constant)):
        value = const_text(call.args[1], consts)
        if value is not None and value.isidentifier():
            call.args[1] = ast.copy_location(ast.Constant(value), call.args[1])
            call.args[1].folded = True  # type: ignore[attr-defined]  # spelled indirectly


def _fold_by_flow(call: ast.Call, tree: ast.Module, flow: list[FileFlow]) -> None:
    """`setattr(dist, cfg["reduce_op"], shim)` with `cfg` a copy of a module dict handed in
    by the caller: the attribute name found by the file's value flow."""
    if not (isinstance(call.func, ast.Name) and len(call.args) >= 2 and (
            (call.func.id == "setattr" and isinstance(call.args[1], (ast.Name, ast.Subscript)))
            or (call.func.id == "getattr" and isinstance(call.args[1], ast.Subscript)))):
        return  # (getattr(obj, name) with a plain variable is everyday code: not followed)
    if not flow:
        flow.append(FileFlow(tree))
    value = flow[0].resolve(call.args[1], flow[0].owner(call))[0]
    if isinstance(value, ast.Constant) and isinstance(value.value, str) and (
            value.value.isidentifier()):
        folded = ast.copy_location(ast.Constant(value.value), call.args[1])
        folded.folded = True  # type: ignore[attr-defined]  # spelled indirectly
        call.args[1] = folded


def _chosen_call(stmt: ast.Expr, call: ast.Call, choice: ast.IfExp,
                 noops: frozenset[str]) -> ast.stmt:
    def branch(func: ast.expr) -> list[ast.stmt]:
        if isinstance(func, ast.Name) and func.id in noops:
            return []
        made = ast.Call(func=func, args=call.args, keywords=call.keywords)
        return [ast.copy_location(ast.Expr(ast.copy_location(made, call)), stmt)]

    body, orelse = branch(choice.body), branch(choice.orelse)
    test = choice.test
    if not body and orelse:  # (_noop if skip else dist.barrier)(): the barrier under `not skip`
        test = ast.copy_location(ast.UnaryOp(op=ast.Not(), operand=test), test)
        body, orelse = orelse, []
    if not body:
        return stmt
    return ast.fix_missing_locations(ast.copy_location(
        ast.If(test=test, body=body, orelse=orelse), stmt))


def _noops(tree: ast.Module) -> frozenset[str]:
    """Module names bound to functions that do nothing (`_noop = lambda: None`)."""
    out = set()
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name) and noop_lambda(stmt.value)):
            out.add(stmt.targets[0].id)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and all(
                isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(
                    s.value, ast.Constant)) or (isinstance(s, ast.Return) and (
                        s.value is None or literal(s.value) is None)) for s in stmt.body):
            out.add(stmt.name)
    return frozenset(out)


_OPERATORS: dict[str, ast.operator] = {
    "mul": ast.Mult(), "truediv": ast.Div(), "add": ast.Add(), "sub": ast.Sub(),
    "pow": ast.Pow(), "floordiv": ast.FloorDiv()}


class _Substitute(ast.NodeTransformer):
    """Replaces reads of one name with a copy of an expression."""

    def __init__(self, name: str, value: ast.expr) -> None:
        self.name, self.value = name, value

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if node.id == self.name and isinstance(node.ctx, ast.Load):
            return ast.copy_location(copy.deepcopy(self.value), node)
        return node


_IN_PLACE_OPS: dict[str, ast.operator] = {
    "imul": ast.Mult(), "itruediv": ast.Div(), "iadd": ast.Add(), "isub": ast.Sub()}


def _as_store(expr: ast.expr) -> ast.Name | ast.Attribute | ast.Subscript | None:
    """A copy of `expr` usable as an assignment target (None when it cannot be one)."""
    if not isinstance(expr, (ast.Name, ast.Attribute, ast.Subscript)):
        return None
    out = copy.copy(expr)
    out.ctx = ast.Store()
    return out


def _fold_operators(node: ast.AST, names: frozenset[str] = frozenset({"operator"})) -> None:
    """`operator.mul(g["lr"], k)` -> `g["lr"] * k`, `operator.neg(x)` -> `-x`: arithmetic
    spelled as calls reads as arithmetic to the checks."""
    for field, child in ast.iter_fields(node):
        items = child if isinstance(child, list) else [child]
        for i, item in enumerate(items):
            if not (isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute)
                    and isinstance(item.func.value, ast.Name)
                    and item.func.value.id in names and not item.keywords):
                continue
            new: ast.expr | None = None
            op = _OPERATORS.get(item.func.attr)
            if op is not None and len(item.args) == 2:
                new = ast.BinOp(left=item.args[0], op=op, right=item.args[1])
            elif item.func.attr == "neg" and len(item.args) == 1:
                new = ast.UnaryOp(op=ast.USub(), operand=item.args[0])
            if new is None:
                continue
            new = ast.copy_location(new, item)
            if isinstance(child, list):
                child[i] = new
            else:
                setattr(node, field, new)


def _table_entry(value: ast.expr, tables: dict[str, dict[object, ast.expr]]) -> bool:
    """`_READERS[suffix]` of a module-level table (`.get(suffix, default)` is left as a name:
    the checks follow such names to the table themselves)."""
    return (isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and value.value.id in tables)


def _inline_table_entries(nodes: list[ast.AST], tables: dict[str, dict[object, ast.expr]],
                          ) -> None:
    """`reader = _READERS[path.suffix]` bound once in a function, then `reader(path)`: the
    call becomes `_READERS[path.suffix](path)`, which `_dispatch` resolves (or the checks read
    as a call of every entry)."""
    for fn in (n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        stores: dict[str, int] = {}
        entries: dict[str, ast.expr] = {}
        for node in subnodes(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                stores[node.id] = stores.get(node.id, 0) + 1
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name)
                    and _table_entry(node.value, tables)):
                entries[node.targets[0].id] = node.value
        for node in subnodes(fn) if entries else ():
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and stores.get(node.func.id) == 1 and node.func.id in entries):
                node.func = ast.copy_location(copy.deepcopy(entries[node.func.id]), node.func)


_ANY_KEY = object()
"""The key of a table built by a comprehension (`{ext: partial(load, ...) for ext in ...}`):
every entry holds the same value."""


def _dispatch(call: ast.Call, tables: dict[str, dict[object, ast.expr]]) -> None:
    """`_OPS["decay"](t, 1e-3)` with `_OPS = {"decay": torch.Tensor.mul_}` -> `t.mul_(1e-3)`;
    `_PURGE["dir"](p)` with a function in the table -> that function called (also
    `_LOADERS.get(ext, default)(p)`, and `partial(f, ...)` entries as calls of f)."""
    func = call.func
    if (isinstance(func, ast.Call) and isinstance(func.func, ast.Attribute)
            and func.func.attr == "get" and func.args):
        table, key = func.func.value, func.args[0]
    elif isinstance(func, ast.Subscript):
        table, key = func.value, func.slice
    else:
        return
    if not (isinstance(table, ast.Name) and table.id in tables):
        return
    entries = tables[table.id]
    entry = entries.get(literal(key), entries.get(_ANY_KEY))
    if (isinstance(entry, ast.Call) and last_attr(entry.func) == "partial" and entry.args
            and isinstance(entry.args[0], (ast.Name, ast.Attribute))):
        call.args = [*entry.args[1:], *call.args]  # (the bound arguments come first)
        call.keywords = [*entry.keywords, *call.keywords]
        entry = entry.args[0]
    if not isinstance(entry, (ast.Name, ast.Attribute)):
        return
    if (isinstance(entry, ast.Attribute) and ast.unparse(entry.value) in _UNBOUND_OWNERS
            and call.args):
        call.func = ast.copy_location(ast.Attribute(value=call.args[0], attr=entry.attr,
                                                    ctx=ast.Load()), func)
        call.args = call.args[1:]
        return
    call.func = ast.copy_location(copy.deepcopy(entry), func)


_UNBOUND_OWNERS = frozenset({"torch.Tensor", "Tensor", "np.ndarray", "numpy.ndarray"})


def _bind_method(call: ast.Call, unbound: dict[str, str]) -> None:
    """`_rescale = torch.Tensor.mul_` ... `_rescale(w, 0.9)` -> `w.mul_(0.9)`; and the unbound
    call written out, `torch.Tensor.fill_(x, 2.2)` -> `x.fill_(2.2)`."""
    if not call.args:
        return
    if isinstance(call.func, ast.Name) and call.func.id in unbound:
        method = unbound[call.func.id]
    elif (isinstance(call.func, ast.Attribute) and not call.func.attr.startswith("__")
          and last_attr(call.func.value) in ("Tensor", "ndarray")  # (cheap test first)
          and ast.unparse(call.func.value) in _UNBOUND_OWNERS):
        method = call.func.attr
    else:
        return
    owner = call.args[0]
    call.func = ast.copy_location(ast.Attribute(value=owner, attr=method, ctx=ast.Load()),
                                  call.func)
    call.args = call.args[1:]


def _fold_subscripts(node: ast.AST, consts: dict[str, object]) -> None:
    """`env["_".join(("LD", "PRELOAD"))]` -> `env["LD_PRELOAD"]`; `_DOT["ssh"]` (a module
    table of strings, read) -> `".ssh"`: keys and path parts spelled through constants."""
    for field, child in ast.iter_fields(node):
        if isinstance(child, list):
            for i, item in enumerate(child):
                new = _folded_subscript(item, consts)
                if new is not None:
                    child[i] = new
        else:
            new = _folded_subscript(child, consts)
            if new is not None:
                setattr(node, field, new)


def _folded_subscript(node: object, consts: dict[str, object]) -> ast.expr | None:
    if not isinstance(node, ast.Subscript) or isinstance(node.slice, ast.Slice):
        return None
    if not isinstance(node.slice, ast.Constant):
        key = const_text(node.slice, consts)
        if key is not None:
            node.slice = ast.copy_location(ast.Constant(key), node.slice)
            node.slice.folded = True  # type: ignore[attr-defined]  # spelled indirectly
    if (isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "vars"
            and len(node.value.args) == 1 and isinstance(node.value.args[0], ast.Name)
            and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
            and node.slice.value.isidentifier() and not getattr(node.slice, "folded", False)
            and node.value.args[0].id not in ("builtins", "__builtins__")):
        # vars(os)["environ"] -> os.environ (builtins lookups keep their own, louder finding)
        return ast.copy_location(ast.Attribute(value=node.value.args[0], attr=node.slice.value,
                                               ctx=ast.Load()), node)
    if isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name) and isinstance(
            consts.get(node.value.id), dict):
        value = const_text(node, consts)
        if value is not None:
            folded = ast.copy_location(ast.Constant(value), node)
            folded.folded = True  # type: ignore[attr-defined]  # spelled through a table
            return folded
    return None


def _comprehension_loop(stmt: ast.stmt, consts: dict[str, object], noops: frozenset[str],
                        operator_names: frozenset[str]) -> ast.stmt | None:
    """`[p.unlink() for p in d.glob("*.pt") if today >= CUTOFF]` run for its effect ->
    `for p in ...: if today >= CUTOFF: p.unlink()`, so the call sits under its loop and test."""
    value = stmt.value if isinstance(stmt, ast.Expr) else None
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in ("list", "set", "tuple", "any", "all") and len(value.args) == 1):
        value = value.args[0]
    if not (isinstance(value, (ast.ListComp, ast.SetComp, ast.GeneratorExp))
            and isinstance(value.elt, ast.Call)):
        return None
    inner: ast.stmt = ast.copy_location(ast.Expr(value.elt), stmt)
    rewritten = _statement(inner, consts, noops, operator_names)  # [g.__setitem__(...) for g]
    body: list[ast.stmt] = (rewritten if isinstance(rewritten, list) else [rewritten]) if (
        rewritten is not None) else [inner]
    return _under_generators(body, value.generators, stmt)


def _under_generators(body: list[ast.stmt], generators: list[ast.comprehension],
                      stmt: ast.stmt) -> ast.stmt:
    """`body` inside the loops and tests of a comprehension's generators, at `stmt`'s line."""
    for gen in reversed(generators):
        for test in reversed(gen.ifs):
            body = [ast.copy_location(ast.If(test=test, body=body, orelse=[]), stmt)]
        body = [ast.copy_location(ast.For(target=gen.target, iter=gen.iter, body=body, orelse=[],
                                          type_comment=None), stmt)]
    return ast.fix_missing_locations(body[0])


def _storage(expr: ast.expr) -> str:
    """`p` and `p.data` name the same storage (`torch.mul(p, k, out=p.data)` is in place)."""
    while isinstance(expr, ast.Attribute) and expr.attr == "data":
        expr = expr.value
    return ast.unparse(expr)


def _update_pairs(call: ast.Call) -> list[tuple[ast.expr | None, ast.expr]]:
    """The (key, value) pairs of `x.update({k: v, ...})` or `x.update([(k, v), ...])`."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "update"
            and not call.keywords and len(call.args) == 1):
        return []
    arg = call.args[0]
    if isinstance(arg, ast.Dict) and 1 <= len(arg.keys) <= 16:
        return list(zip(arg.keys, arg.values, strict=True))
    if (isinstance(arg, (ast.List, ast.Tuple)) and 1 <= len(arg.elts) <= 16 and all(
            isinstance(e, ast.Tuple) and len(e.elts) == 2 for e in arg.elts)):
        return [(e.elts[0], e.elts[1]) for e in arg.elts]  # type: ignore[attr-defined]
    return []


def _namespace_write(stmt: ast.stmt) -> ast.stmt | None:
    """`vars(sched)["base_lrs"] = v`, `sched.__dict__["x"] = v` -> `sched.x = v`."""
    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Subscript)):
        return None
    target = stmt.targets[0]
    key = literal(target.slice)
    if not (isinstance(key, str) and key.isidentifier()):
        return None
    owner = target.value
    namespace = owner.value if isinstance(owner, ast.Attribute) and (
        owner.attr == "__dict__") else owner.args[0] if isinstance(owner, ast.Call) and (
        isinstance(owner.func, ast.Name) and owner.func.id == "vars"
        and len(owner.args) == 1) else None
    if namespace is None:
        return None
    attr = ast.copy_location(ast.Attribute(value=namespace, attr=key, ctx=ast.Store()), target)
    return ast.fix_missing_locations(ast.copy_location(
        ast.Assign(targets=[attr], value=stmt.value), stmt))


def _statement(stmt: ast.stmt, consts: dict[str, object],
               noops: frozenset[str] = frozenset(),
               operator_names: frozenset[str] = frozenset({"operator"}),
               earlier: list[ast.stmt] | None = None,
               ) -> ast.stmt | list[ast.stmt] | None:
    """`setattr(x, "a", v)` -> `x.a = v`; `x.__setitem__(k, v)` -> `x[k] = v`;
    `(f if c else g)(x)` -> `if c: f(x) else: g(x)` (a no-op side dropped)."""
    if (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Call)
            and last_attr(stmt.value.func.func) == "methodcaller"):
        _fold_getattr(stmt.value, consts)  # methodcaller("__setitem__", k, v)(g), folded first
    looped = _comprehension_loop(stmt, consts, noops, operator_names)
    if looped is not None:
        return looped
    namespaced = _namespace_write(stmt)
    if namespaced is not None:
        return namespaced
    if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
        return None
    call = stmt.value
    func = call.func
    if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id in operator_names and func.attr in _IN_PLACE_OPS
            and len(call.args) == 2 and not call.keywords):
        # operator.imul(st["exp_avg_sq"], k) -> st["exp_avg_sq"] *= k
        lhs = _as_store(call.args[0])
        if lhs is None:
            return None
        return ast.fix_missing_locations(ast.copy_location(ast.AugAssign(
            target=lhs, op=_IN_PLACE_OPS[func.attr], value=call.args[1]), stmt))
    out_arg = next((k.value for k in call.keywords if k.arg == "out"), None)
    if (out_arg is not None and isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name) and func.value.id == "torch" and call.args
            and _storage(call.args[0]) == _storage(out_arg)):
        # torch.lerp(p, r, w, out=p) -> p.lerp_(r, w): an in-place write spelled with out=
        return ast.fix_missing_locations(ast.copy_location(ast.Expr(value=ast.copy_location(
            ast.Call(func=ast.Attribute(value=out_arg, attr=func.attr + "_", ctx=ast.Load()),
                     args=call.args[1:], keywords=[k for k in call.keywords if k.arg != "out"]),
            call)), stmt))
    mapped = call.args[0] if (isinstance(func, ast.Name) and func.id in ("list", "tuple", "set")
                              and len(call.args) == 1) else call
    if (isinstance(mapped, ast.Call) and isinstance(mapped.func, ast.Name)
            and mapped.func.id == "map" and len(mapped.args) == 2
            and isinstance(mapped.args[0], (ast.Call, ast.Attribute, ast.Name, ast.Lambda))):
        # list(map(f, xs)) run for its effect -> for _item in xs: f(_item)
        items = mapped.args[1]
        if isinstance(items, ast.Name) and earlier:  # states = (s["exp_avg_sq"] for s in ...)
            held = next((e.value for e in reversed(earlier) if isinstance(e, ast.Assign)
                         and len(e.targets) == 1 and isinstance(e.targets[0], ast.Name)
                         and e.targets[0].id == items.id), None)
            if isinstance(held, (ast.GeneratorExp, ast.ListComp)):
                items = held
        element: ast.expr = ast.Name(id="_mapped_item", ctx=ast.Load())
        if isinstance(items, (ast.GeneratorExp, ast.ListComp)):
            element = items.elt
        each = ast.Call(func=mapped.args[0], args=[element], keywords=[])
        if isinstance(mapped.args[0], ast.Call):
            _fold_getattr(each, consts)  # map(operator.methodcaller("mul_", k), xs)
        expr = ast.copy_location(ast.Expr(value=each), stmt)
        rewrote = _statement(expr, consts, noops, operator_names)  # (methodcaller("__setitem__"))
        body: list[ast.stmt] = [rewrote if isinstance(rewrote, ast.stmt) else expr]
        if isinstance(items, (ast.GeneratorExp, ast.ListComp)):  # under its loops and tests
            return _under_generators(body, items.generators, stmt)
        loop = ast.For(target=ast.Name(id="_mapped_item", ctx=ast.Store()), iter=items,
                       body=body, orelse=[])
        return ast.fix_missing_locations(ast.copy_location(loop, stmt))
    if isinstance(call.func, ast.IfExp):
        return _chosen_call(stmt, call, call.func, noops)
    if (isinstance(call.func, ast.Attribute) and call.func.attr == "update" and not call.args
            and len(call.keywords) == 1 and call.keywords[0].arg is not None):
        key = call.keywords[0]  # g.update(lr=x) -> g["lr"] = x
        owner = call.func.value
        namespace = owner.value if isinstance(owner, ast.Attribute) and (
            owner.attr == "__dict__") else owner.args[0] if isinstance(owner, ast.Call) and (
            isinstance(owner.func, ast.Name) and owner.func.id == "vars" and owner.args) else None
        item: ast.expr = ast.Subscript(value=owner, slice=ast.Constant(key.arg), ctx=ast.Store())
        if namespace is not None:  # F.__dict__.update(normalize=f) -> F.normalize = f
            item = ast.Attribute(value=namespace, attr=str(key.arg), ctx=ast.Store())
        return ast.fix_missing_locations(ast.copy_location(
            ast.Assign(targets=[ast.copy_location(item, stmt)], value=key.value), stmt))
    if (isinstance(call.func, ast.Attribute) and call.func.attr == "update" and not call.keywords
            and len(call.args) == 1 and isinstance(comp := call.args[0], ast.DictComp)
            and len(comp.generators) == 1 and not comp.generators[0].ifs
            and isinstance(var := comp.generators[0].target, ast.Name)
            and isinstance(comp.generators[0].iter, (ast.Tuple, ast.List))
            and 1 <= len(comp.generators[0].iter.elts) <= 16
            and all(isinstance(literal(e), str) for e in comp.generators[0].iter.elts)):
        # report.update({k: prev[k] for k in ("auc", "ks")}) -> report["auc"] = prev["auc"]...
        out: list[ast.stmt] = []
        for elt in comp.generators[0].iter.elts:
            key, read = (_Substitute(var.id, elt).visit(copy.deepcopy(e))
                          for e in (comp.key, comp.value))
            out.append(ast.copy_location(ast.Assign(targets=[ast.Subscript(
                value=call.func.value, slice=key, ctx=ast.Store())], value=read), stmt))
        return [ast.fix_missing_locations(a) for a in out]
    pairs = _update_pairs(call)
    if pairs and all(k is not None and const_text(k, consts) is not None for k, _ in pairs):
        assigns: list[ast.stmt] = []  # env.update({"A": a, "LD_PRELOAD": p}) -> env[...] = p
        for dict_key, entry_value in pairs:
            entry: ast.expr = dict_key  # type: ignore[assignment]
            if not isinstance(entry, ast.Constant):  # {_PRELOAD_VAR: p}: through a constant
                entry = ast.copy_location(ast.Constant(const_text(entry, consts)), entry)
                entry.folded = True  # type: ignore[attr-defined]
            item = ast.Subscript(value=call.func.value,  # type: ignore[attr-defined]
                                 slice=entry, ctx=ast.Store())
            assigns.append(ast.fix_missing_locations(ast.copy_location(
                ast.Assign(targets=[ast.copy_location(item, stmt)], value=entry_value), stmt)))
        return assigns
    written = _numpy_write(call)
    if written is not None:
        return ast.fix_missing_locations(ast.copy_location(
            ast.Assign(targets=[ast.copy_location(written[0], stmt)], value=written[1]), stmt))
    if (isinstance(call.func, ast.Attribute) and call.func.attr == "setdefault"
            and last_attr(call.func.value) == "environ" and len(call.args) == 2
            and (key_text := const_text(call.args[0], consts)) is not None):
        entry = ast.copy_location(ast.Constant(key_text), call.args[0])
        entry.folded = not isinstance(call.args[0], ast.Constant)  # type: ignore[attr-defined]
        item = ast.Subscript(value=call.func.value, slice=entry, ctx=ast.Store())
        return ast.fix_missing_locations(ast.copy_location(  # environ.setdefault(K, v)
            ast.Assign(targets=[ast.copy_location(item, stmt)], value=call.args[1]), stmt))
    if call.keywords or (len(call.args) != 3 and not (
            isinstance(call.func, ast.Attribute) and len(call.args) == 2)):
        return None
    target: ast.expr | None = None
    value: ast.expr | None = None
    if isinstance(call.func, ast.Name) and call.func.id == "setattr" and len(call.args) == 3:
        name = const_text(call.args[1], consts)  # (also "base_" + "lrs", not folded yet here)
        if isinstance(name, str) and name.isidentifier():
            target = ast.Attribute(value=call.args[0], attr=name, ctx=ast.Store())
            value = call.args[2]
    elif (isinstance(call.func, ast.Attribute) and call.func.attr in ("setitem", "__setitem__")
          and isinstance(call.func.value, ast.Name) and call.func.value.id in operator_names
          and len(call.args) == 3):  # operator.setitem(g, "lr", v) -> g["lr"] = v
        target = ast.Subscript(value=call.args[0], slice=call.args[1], ctx=ast.Store())
        value = call.args[2]
    elif isinstance(call.func, ast.Attribute) and call.func.attr == "__setitem__" \
            and len(call.args) == 2:
        target = ast.Subscript(value=call.func.value, slice=call.args[0], ctx=ast.Store())
        value = call.args[1]
    if target is None or value is None:
        return None
    ast.copy_location(target, stmt)
    ast.fix_missing_locations(target)
    assign = ast.copy_location(ast.Assign(targets=[target], value=value), stmt)
    return _namespace_write(assign) or assign  # operator.setitem(vars(s), "base_lrs", v)

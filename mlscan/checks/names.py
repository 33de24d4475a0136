"""Cheap name resolution: imports and aliases only (no scope analysis).

`import torch as t; t.manual_seed` resolves to `torch.manual_seed`, `from torch import optim;
optim.SGD` to `torch.optim.SGD`. One module-wide table is enough for the checks: they match
qualified names of well-known library functions, which code rarely shadows locally.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable

from mlscan.checks import exports
from mlscan.checks.nodes import subnodes

_PROJECT_MODULE = re.compile(r"^\.*[A-Za-z_][\w.]*$")


class Names:
    """Import alias table for one file, filled while the walker visits import statements."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self._from_assign: set[str] = set()
        self.alias_keywords: dict[str, list[ast.keyword]] = {}
        """Keywords a `partial()` alias passes (`partial(torch.load, weights_only=True)`)."""
        self.alias_tests: dict[str, ast.expr] = {}
        """Aliases bound only when a test holds (`f = time.sleep if big else noop`)."""
        self._calls: dict[int, tuple[ast.Call, int, str]] = {}
        """call_name by call node, with the alias table's version it was computed under: every
        check asks for the name of every call (about ten times per call)."""
        self._version = 0
        self.path: str | None = None
        """The scanned file, to read the project modules it imports names from."""
        self.project_modules: dict[str, str] = {}
        """`import utils` of a module beside the scanned file: name -> its file, so that
        `utils.backoff(...)` resolves when utils.py has `from time import sleep as backoff`."""

    def add_assign(self, name: str, value: ast.expr, module_level: bool = False) -> None:
        """`reseed = torch.manual_seed`, `opt_cls = torch.optim.AdamW`: a plain name bound to an
        imported API is an alias of it; rebinding the name to anything else forgets that.
        A bare module (`_rng = random`) is an alias only at module level: inside a function,
        `pickle_module = pickle` is one branch of a parameter's fallback."""
        test = None
        if isinstance(value, ast.IfExp):  # `time.sleep if world > 256 else (lambda s: None)`
            live = [b for b in (value.body, value.orelse) if not noop_lambda(b)]
            if len(live) == 1:
                test = value.test if live[0] is value.body else ast.UnaryOp(
                    op=ast.Not(), operand=value.test)
                value = live[0]
        bound: list[ast.keyword] = []
        if (isinstance(value, ast.Call) and value.args
                and self.qualname(value.func) in ("functools.partial", "partial")):
            bound = [k for k in value.keywords if k.arg]  # passed on every call through it
            value = value.args[0]  # functools.partial(torch.cuda.manual_seed_all)
        kinds = (ast.Attribute, ast.Call, ast.Name, ast.Subscript) if module_level else (
            ast.Attribute, ast.Call, ast.Subscript)
        qual = self.qualname(value) if isinstance(value, kinds) else None
        self.alias_tests.pop(name, None)
        self.alias_keywords.pop(name, None)
        module = imported_module(value, self)
        self._version += 1
        if module:  # codec = importlib.import_module("pickle")
            self.aliases[name] = module
            self._from_assign.add(name)
        elif qual and "()" not in qual and (_root_id(value) in self.aliases or bool(
                (root := _root_call(value)) is not None and imported_module(root, self))) and (
                qual != name):  # run = getattr(importlib.import_module("builtins"), "exec")
            self.aliases[name] = qual
            self._from_assign.add(name)
            if test is not None:
                self.alias_tests[name] = ast.copy_location(test, value)
            if bound:
                self.alias_keywords[name] = bound
        elif name in self._from_assign:
            del self.aliases[name]
            self._from_assign.discard(name)

    def add_import(self, node: ast.Import | ast.ImportFrom) -> None:
        self._version += 1
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    self.aliases[top] = top
                if self.path and (alias.asname or "." not in alias.name) and (
                        found := exports.module_file(self.path, alias.name)) is not None:
                    self.project_modules[alias.name] = found  # (as qualname spells it)
            return
        module = "." * node.level + (node.module or "")
        for alias in node.names:
            if alias.name == "*":
                continue
            exported = exports.resolve(self.path, module, alias.name) if (
                self.path and _PROJECT_MODULE.match(module)) else None
            # from utils import prune_tree, with `prune_tree = shutil.rmtree` in utils.py
            self.aliases[alias.asname or alias.name] = exported or f"{module}.{alias.name}".lstrip(
                ".")

    def qualname(self, expr: ast.AST) -> str | None:
        """Dotted name of a Name/Attribute chain with imports resolved; calls inside the
        chain are kept as `()` (`datetime.datetime.now().hour`). None for anything else."""
        parts: list[str] = []
        node = expr
        while True:
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "self" and f"self.{node.attr}" in self.aliases
                    and node is not expr):  # self._rng.manual_seed_all, self._rng = torch.cuda
                parts.append(self.aliases[f"self.{node.attr}"])
                break
            if isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            elif isinstance(node, ast.Call):
                attr = getattr_name(node)
                if attr is not None:  # getattr(torch, "manual_seed") is torch.manual_seed
                    parts.append(attr)
                    node = node.args[0]
                    continue
                module = imported_module(node, self)
                if module:  # __import__("subprocess").run
                    parts.append(module)
                    break
                parts.append("()")
                node = node.func
            elif isinstance(node, ast.Name):
                parts.append(self.aliases.get(node.id, node.id))
                break
            elif (entry := namespace_entry(node)) is not None:
                parts.append(entry[1])  # vars(builtins)["exec"]
                node = entry[0]
            else:
                return None
        out = ""
        for part in reversed(parts):
            if part == "()":
                out += "()"
            elif out:
                out += "." + part
            else:
                out = part
        if self.project_modules and len(parts) >= 2 and parts[-1] in self.project_modules:
            exported = exports.exported_aliases(self.project_modules[parts[-1]]).get(parts[-2])
            if exported:  # utils.backoff -> time.sleep
                out = exported + out[len(parts[-1]) + 1 + len(parts[-2]):]
        return _canonical(out)

    def call_name(self, call: ast.Call) -> str:
        """Qualified name of what a call calls, or '' when it is not a plain name chain
        (`self._align(...)` with a class attribute `_align = torch.manual_seed` included)."""
        hit = self._calls.get(id(call))
        if hit is not None and hit[0] is call and hit[1] == self._version:
            return hit[2]
        func = call.func
        if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == "self" and f"self.{func.attr}" in self.aliases):
            name = self.aliases[f"self.{func.attr}"]
        else:
            name = self.qualname(func) or ""
        self._calls[id(call)] = (call, self._version, name)  # (holding the node keeps its id)
        return name


_HIDDEN_GLOBALS = (("numpy.random.mtrand._rand.", "numpy.random."),
                   ("numpy.random.mtrand.", "numpy.random."), ("random._inst.", "random."))
"""The objects behind the module-level RNG functions: `np.random.mtrand._rand.seed(s)` is
`np.random.seed(s)`, `random._inst.seed(s)` is `random.seed(s)`."""


_HIDDEN_PREFIXES = tuple(hidden for hidden, _ in _HIDDEN_GLOBALS)


def _canonical(name: str) -> str:
    if not name.startswith(_HIDDEN_PREFIXES):  # (qualname is hot: one test for the usual case)
        return name
    for hidden, public in _HIDDEN_GLOBALS:
        if name.startswith(hidden):
            return public + name[len(hidden):]
    return name


def noop_lambda(expr: ast.expr) -> bool:
    """`lambda *a: None`: a stand-in that does nothing."""
    return isinstance(expr, ast.Lambda) and isinstance(expr.body, ast.Constant) and (
        expr.body.value is None)


def imported_module(value: ast.expr, names: Names) -> str:
    """'pickle' for `importlib.import_module("pickle")` / `__import__("pickle")` (names the
    normalize pass folded to a constant included)."""
    if (isinstance(value, ast.Subscript) and isinstance(value.slice, ast.Constant)
            and isinstance(value.slice.value, str)
            and names.qualname(value.value) == "sys.modules"):  # sys.modules["torch.nn.functional"]
        module = value.slice.value
    elif not (isinstance(value, ast.Call) and value.args and isinstance(
            value.args[0], ast.Constant) and isinstance(value.args[0].value, str)):
        return ""
    elif names.call_name(value) in ("importlib.import_module", "__import__",
                                    "builtins.__import__", "sys.modules.get"):
        module = value.args[0].value
    else:
        return ""
    return module if all(p.isidentifier() for p in module.split(".")) else ""


def defaults_by_name(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                     ) -> dict[str, ast.expr]:
    """Parameters with a default, by name (`lambda g, s=scale: ...` -> {s: scale})."""
    params = [*fn.args.posonlyargs, *fn.args.args]
    defaults = fn.args.defaults
    out = dict(zip([a.arg for a in params[len(params) - len(defaults):]], defaults, strict=True))
    out.update((a.arg, d) for a, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True)
               if d is not None)  # def f(x, *, offset=_stream_offset)
    return out


def param_names(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Every parameter name, `*args` and `**kwargs` included."""
    args = fn.args
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    names.update(a.arg for a in (args.vararg, args.kwarg) if a is not None)
    return names


def root_name(expr: ast.AST) -> str:
    """`self.cfg.seed` -> "self", `proxy.runs.submit` -> "proxy": the name an attribute chain
    starts from ('' when it starts from a call or subscript)."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else ""


def source(expr: ast.AST) -> str:
    """`ast.unparse(expr)`, without its cost for the common cases: a name (`y`) or a dotted
    chain of names (`self.cfg.seed`), which unparse to exactly this text."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        parts = []
        node: ast.expr = expr
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
    return ast.unparse(expr)


def last_attr(expr: ast.AST) -> str:
    """`a.b.c` -> `c`; `f` -> `f`; anything else -> ''."""
    if isinstance(expr, ast.Attribute):
        return expr.attr
    if isinstance(expr, ast.Name):
        return expr.id
    return ""


def _chain_root(expr: ast.AST) -> ast.AST:
    """Where an attribute/getattr chain starts (`torch` in `getattr(torch, "x").y`)."""
    while True:
        if isinstance(expr, ast.Attribute):
            expr = expr.value
        elif isinstance(expr, ast.Call) and getattr_name(expr) is not None:
            expr = expr.args[0]
        elif (entry := namespace_entry(expr)) is not None:
            expr = entry[0]
        else:
            return expr


def namespace_entry(expr: ast.AST) -> tuple[ast.expr, str] | None:
    """(module, name) for `vars(builtins)["exec"]` / `builtins.__dict__["exec"]`: an
    attribute read through the namespace dict, as getattr() would."""
    if not (isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Constant)
            and isinstance(expr.slice.value, str)):
        return None
    inner = expr.value
    if (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
            and inner.func.id == "vars" and len(inner.args) == 1):
        return inner.args[0], expr.slice.value
    if isinstance(inner, ast.Attribute) and inner.attr == "__dict__":
        return inner.value, expr.slice.value
    return None


def _root_call(expr: ast.AST) -> ast.Call | None:
    """The call a chain starts from (`importlib.import_module("x")`), if it starts with one."""
    root = _chain_root(expr)
    return root if isinstance(root, ast.Call) else None


def _root_id(expr: ast.AST) -> str:
    root = _chain_root(expr)
    return root.id if isinstance(root, ast.Name) else ""


def getattr_name(call: ast.Call) -> str | None:
    """'x' for `getattr(obj, "x")` / `getattr(obj, "x", default)`, else None."""
    if (isinstance(call.func, ast.Name) and call.func.id == "getattr" and 2 <= len(call.args) <= 3
            and isinstance(call.args[1], ast.Constant) and isinstance(call.args[1].value, str)):
        return call.args[1].value
    return None


def bound_values(fn: ast.AST) -> dict[str, ast.expr]:
    """Names bound inside a function body (`x = ...`, `with open(p) as f`), last one wins."""
    out: dict[str, ast.expr] = {}
    for node in subnodes(fn):
        if isinstance(node, ast.Assign):
            out.update((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            out.update((i.optional_vars.id, i.context_expr) for i in node.items
                       if isinstance(i.optional_vars, ast.Name))
    return out


def kwarg(call: ast.Call, name: str) -> ast.expr | None:
    """Keyword `name`, also from a `**{"name": value}` literal."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
        if kw.arg is None and isinstance(kw.value, ast.Dict):
            for key, value in zip(kw.value.keys, kw.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == name:
                    return value
    return None


def arg(call: ast.Call, index: int, name: str) -> ast.expr | None:
    """Positional argument `index` or keyword `name`."""
    value = kwarg(call, name)
    if value is not None:
        return value
    if index < len(call.args) and not isinstance(call.args[index], ast.Starred):
        return call.args[index]
    return None


def literal(expr: ast.AST | None) -> object:
    """The value of a constant (also `-1`), else the `NOT_LITERAL` sentinel."""
    if isinstance(expr, ast.Constant):
        return expr.value
    if (isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub)
            and isinstance(expr.operand, ast.Constant)
            and isinstance(expr.operand.value, (int, float))):
        return -expr.operand.value
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "bool"
            and len(expr.args) == 1 and isinstance(expr.args[0], ast.Constant)
            and not expr.keywords):
        return bool(expr.args[0].value)  # weights_only=bool(0)
    return NOT_LITERAL


NOT_LITERAL = object()

_FOLD_OPS: dict[type[ast.operator], Callable[[float, float], object]] = {
    ast.Mult: lambda a, b: a * b, ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b, ast.Div: lambda a, b: a / b if b else NOT_LITERAL}


def folded_number(expr: ast.AST | None, depth: int = 0) -> object:
    """A number spelled as arithmetic on literals: `2 * 2.5`, `math.prod((2, 2, 2.5))`,
    `functools.reduce(operator.mul, (2, 2, 2.5))` (else `NOT_LITERAL`)."""
    value = literal(expr)
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or depth > 8:
        return value if isinstance(value, (int, float)) else NOT_LITERAL
    if isinstance(expr, ast.BinOp) and type(expr.op) in _FOLD_OPS:
        left, right = folded_number(expr.left, depth + 1), folded_number(expr.right, depth + 1)
        if isinstance(left, (int, float)) and isinstance(right, (int, float)):
            return _FOLD_OPS[type(expr.op)](left, right)
        return NOT_LITERAL
    if not isinstance(expr, ast.Call) or expr.keywords:
        return NOT_LITERAL
    name, args = last_attr(expr.func), expr.args
    op = ast.Mult if name == "prod" else ast.Add if name in ("sum", "fsum") else None
    if name == "reduce" and len(args) == 2 and last_attr(args[0]) in ("mul", "add"):
        op, args = (ast.Mult if last_attr(args[0]) == "mul" else ast.Add), args[1:]
    if op is None or len(args) != 1 or not isinstance(args[0], (ast.Tuple, ast.List)):
        return NOT_LITERAL
    numbers = [n for e in args[0].elts
               if isinstance(n := folded_number(e, depth + 1), (int, float))]
    if not numbers or len(numbers) != len(args[0].elts):
        return NOT_LITERAL
    total: object = numbers[0]
    for n in numbers[1:]:
        total = _FOLD_OPS[op](total, n) if isinstance(total, (int, float)) else NOT_LITERAL
    return total


def configured_number(expr: ast.AST | None) -> object:
    """The number a configured value runs with when nothing overrides it:
    `float(os.environ.get("K", "0.28"))`, `os.getenv("K", "3")`, `float("0.28")`, `X or 0.5`
    (else `NOT_LITERAL`)."""
    value = literal(expr)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") else int(value, 0)
        except ValueError:
            return NOT_LITERAL
    if isinstance(expr, ast.BoolOp) and isinstance(expr.op, ast.Or):
        return configured_number(expr.values[-1])  # os.environ.get("K") or 0.28
    if not isinstance(expr, ast.Call) or expr.keywords:
        return NOT_LITERAL
    func = expr.func
    if isinstance(func, ast.Name) and func.id in ("float", "int") and len(expr.args) == 1:
        return configured_number(expr.args[0])
    if isinstance(func, ast.Attribute) and len(expr.args) == 2 and (
            func.attr == "getenv" or (func.attr == "get" and last_attr(func.value) == "environ")):
        return configured_number(expr.args[1])
    return NOT_LITERAL


_VIEWS = frozenset({"view", "reshape", "narrow", "select", "detach", "flatten", "view_as",
                    "squeeze", "unsqueeze", "t", "transpose", "permute", "unflatten",
                    "as_strided", "movedim", "diagonal", "unfold"})


# Tensor constructors that replace a tensor with a fresh one of its shape, and what that does to
# it; shared by the state-dict and hook checks so both know the same wrecking calls.
TENSOR_REPLACERS = {"zeros_like": "zeroed", "rand_like": "replaced with noise",
                    "randn_like": "replaced with noise", "empty_like": "replaced",
                    "ones_like": "replaced with ones", "full_like": "replaced"}


def strip_views(expr: ast.expr) -> ast.expr:
    """`p.detach().reshape(-1)[::k]` as `p[::k]`: views share the tensor's storage, so an
    in-place write through one is a write to the tensor itself."""
    if isinstance(expr, ast.Subscript):
        base = strip_views(expr.value)
        if base is expr.value:
            return expr
        return ast.copy_location(ast.Subscript(value=base, slice=expr.slice, ctx=ast.Load()),
                                 expr)
    while (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
           and expr.func.attr in _VIEWS):
        expr = expr.func.value
    return expr


def is_true(expr: ast.AST | None) -> bool:
    return literal(expr) is True


def is_false(expr: ast.AST | None) -> bool:
    return literal(expr) is False


def as_load(target: ast.expr) -> ast.expr:
    """A copy of an assignment target that reads the value instead (to compare it with what
    the right-hand side reads back)."""
    read = copy.deepcopy(target)
    for node in subnodes(read):
        if isinstance(node, (ast.Name, ast.Attribute, ast.Subscript)):
            node.ctx = ast.Load()
    return read


def masked_by_pruning(node: ast.AST) -> bool:
    """`state.mul_(mask)` / `w.mul_(module.weight_mask)`: a 0/1 pruning mask applied, not a
    rescale (a random draw in the mask is not pruning)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "mul_" and len(node.args) == 1
            and re.search(r"(?i)mask", ast.unparse(node.args[0])) is not None
            and not any(isinstance(n, ast.Call) and re.search(
                r"rand|bernoulli|dropout", last_attr(n.func)) for n in subnodes(node.args[0])))

"""MLS424 through names: world-writable modes set where semgrep's taint loses the call.

The semgrep rule follows installed-package paths into `os.chmod`. Insiders hide the call
behind `functools.partial(os.chmod, mode=0o777)`, `operator.methodcaller("chmod", MODE)`,
`map(...)` over a folder listing, a lambda, or a mode spelled `int("7" * 3, 8)`, and point it
at a folder the caller passes in. This check resolves those spellings and reports a chmod
whose mode lets every local user write (the "others may write" bit, as bandit's B103 does):
HIGH when the path traces to an installed package, MEDIUM elsewhere (anyone on the machine
can then swap the checkpoints, caches or code the job loads next). Group-writable modes
(`0o775`) are how shared project folders work and stay quiet.
"""

from __future__ import annotations

import ast
import re
import stat

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.model import Rule, Severity


def _rule() -> Rule:
    from mlscan.rulesets.semgrep_rules import rules_by_code

    return rules_by_code()["MLS424"]


INSTALLED_CHMOD = _rule()
_CHMODS = frozenset({"os.chmod", "os.lchmod", "os.fchmod"})
_OTHERS_WRITE = stat.S_IWOTH
_MAX_DEPTH = 4
_INSTALLED = re.compile(r"__file__|__path__|site-packages|dist-packages|purelib|platlib"
                        r"|getsitepackages|getusersitepackages|USER_SITE|get_python_lib"
                        r"|sys\.(base_|exec_)?prefix|find_spec|_inductor")
_SOCKET = re.compile(r"sock|\buds\b|fifo|pipe", re.I)
"""Unix sockets and pipes are opened to other users' clients on purpose (servers do it)."""


def _clears_before_delete(ctx: Ctx) -> bool:
    """`def on_rm_error(func, path, exc): os.chmod(path, 0o777); func(path)`: a read-only file
    is made writable so that it can be removed."""
    fn = ctx.frame.node
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    params = {a.arg for a in fn.args.args}
    return any(isinstance(n, ast.Call) and (
        last_attr(n.func) in ("remove", "unlink", "rmdir", "rmtree")
        or (isinstance(n.func, ast.Name) and n.func.id in params)) for n in subnodes(fn))


def _text(expr: ast.AST | None, ctx: Ctx, depth: int = 0) -> str | None:
    """A string spelled in pieces: `"7" * 3`, `"".join(("7",) * 3)`, `"7" + "77"`."""
    if expr is None or depth > _MAX_DEPTH:
        return None
    value = ctx.const(expr) if isinstance(expr, ast.Name) else literal(expr)
    if isinstance(value, str):
        return value
    if isinstance(expr, ast.BinOp):
        left, right = expr.left, expr.right
        if isinstance(expr.op, ast.Add):
            a, b = _text(left, ctx, depth + 1), _text(right, ctx, depth + 1)
            return a + b if a is not None and b is not None else None
        if isinstance(expr.op, ast.Mult):
            times = literal(right)
            part = _text(left, ctx, depth + 1)
            return part * times if part is not None and isinstance(times, int) and (
                0 < times <= 8) else None
    if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "join" and len(expr.args) == 1):
        sep = _text(expr.func.value, ctx, depth + 1)
        parts = _parts(expr.args[0], ctx, depth + 1)
        return sep.join(parts) if sep is not None and parts is not None else None
    return None


def _parts(expr: ast.expr, ctx: Ctx, depth: int) -> list[str] | None:
    """The strings of a literal tuple or list (also `("7",) * 3`)."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        times = literal(expr.right)
        inner = _parts(expr.left, ctx, depth + 1)
        return inner * times if inner is not None and isinstance(times, int) and (
            0 < times <= 8) else None
    if isinstance(expr, (ast.Tuple, ast.List)):
        texts = [_text(e, ctx, depth + 1) for e in expr.elts]
        return None if any(t is None for t in texts) else [t for t in texts if t is not None]
    return None


def mode_bits(expr: ast.AST | None, ctx: Ctx, depth: int = 0) -> int:
    """Permission bits a mode expression certainly sets (0 when unknown). `x | stat.S_IWOTH`
    sets S_IWOTH whatever `x` is."""
    if expr is None or depth > _MAX_DEPTH:
        return 0
    value = ctx.const(expr) if isinstance(expr, ast.Name) else literal(expr)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(expr, ast.Name):  # _SHARED_MODE = stat.S_IRWXU | stat.S_IRWXO
        return mode_bits(ctx.lookup(expr.id), ctx, depth + 1)
    if isinstance(expr, ast.Attribute) and expr.attr.startswith("S_I"):
        found = getattr(stat, expr.attr, None)  # our own stdlib's constants, not scanned code
        return found if isinstance(found, int) else 0
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.BitOr, ast.Add)):
        return mode_bits(expr.left, ctx, depth + 1) | mode_bits(expr.right, ctx, depth + 1)
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and (
            expr.func.id == "int" and len(expr.args) == 2 and literal(expr.args[1]) == 8):
        digits = _text(expr.args[0], ctx)
        if digits is not None and re.fullmatch(r"(0o)?[0-7]{1,4}", digits):
            return int(digits, 8)
    return 0


def _chmod_of(func: ast.expr, ctx: Ctx, depth: int = 0
              ) -> tuple[ast.expr | None, bool] | None:
    """For a callable that changes a file's mode: (the mode it binds, whether the path is the
    receiver of a method call), or None when `func` is no chmod. `functools.partial(os.chmod,
    mode=m)` binds `m`; `operator.methodcaller("chmod", m)` binds `m` and takes the path."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(func, ast.Name):
        value = ctx.lookup(func.id)
        if value is not None and not isinstance(value, ast.Name):
            return _chmod_of(value, ctx, depth + 1)
    if isinstance(func, ast.Call):
        name = ctx.names.call_name(func)
        attr = literal(func.args[1]) if name == "getattr" and len(func.args) == 2 else None
        if isinstance(attr, str):  # getattr(os, "ch" + "mod"), the name folded already
            return _chmod_of(ast.Attribute(value=func.args[0], attr=attr, ctx=ast.Load()),
                             ctx, depth + 1)
        if name in ("functools.partial", "partial") and func.args:
            inner = _chmod_of(func.args[0], ctx, depth + 1)
            if inner is None:
                return None
            mode = next((k.value for k in func.keywords if k.arg == "mode"), None)
            return mode if mode is not None else (
                func.args[2] if len(func.args) > 2 else None), False
        if last_attr(func.func) == "methodcaller" and func.args and (
                literal(func.args[0]) in ("chmod", "lchmod")):
            return (func.args[1] if len(func.args) > 1 else None), True
        return None
    qualified = ctx.names.qualname(func) or ""
    if qualified in _CHMODS:
        return None, False
    return None


class WorldWritableChmod(Check):
    rules = (INSTALLED_CHMOD,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        mode, paths = self._mode_and_paths(node, ctx)
        if mode is None or not paths or not mode_bits(mode, ctx) & _OTHERS_WRITE:
            return  # (no path: the partial's own line, read by the walker as a call)
        path = paths[0]
        listing = ctx.loop_source(path.id) if isinstance(path, ast.Name) else None
        if listing is not None:  # for p in root.rglob("*"), or map()'s items
            path = listing
        shown = ast.unparse(path)[:60]
        if _SOCKET.search(shown) or _clears_before_delete(ctx):
            return
        values = [path, *ctx.walk_values(path)]
        if isinstance(path, ast.Attribute) and ast.unparse(path.value) == "self":
            held = ctx.self_attrs.get(path.attr)  # self._site, set in __init__
            values += [held, *ctx.walk_values(held)] if held is not None else []
        installed = any(_INSTALLED.search(ast.unparse(v)) for v in values
                        if isinstance(v, ast.AST))
        if installed:
            ctx.report(INSTALLED_CHMOD, node, f"makes {shown} (an installed package's files) "
                       "writable by every user: the preparation step for editing installed "
                       "code that every later run imports", severity=Severity.HIGH)
        else:
            ctx.report(INSTALLED_CHMOD, node, f"makes {shown} writable by every user on the "
                       "machine: anyone can then replace the code, checkpoints or caches a "
                       "later run loads", severity=Severity.MEDIUM)

    @staticmethod
    def _mode_and_paths(node: ast.Call, ctx: Ctx) -> tuple[ast.expr | None, list[ast.expr]]:
        func = node.func
        if ctx.names.call_name(node) in ("map", "builtins.map") and len(node.args) == 2:
            bound = _chmod_of(node.args[0], ctx)  # map(partial(os.chmod, mode=0o777), files)
            return (bound[0], [node.args[1]]) if bound is not None else (None, [])
        if isinstance(func, ast.Attribute) and func.attr in ("chmod", "lchmod") and (
                ctx.names.qualname(func) or "") not in _CHMODS:
            mode = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            return mode, [func.value]  # Path(...).chmod(0o777)
        bound = _chmod_of(func, ctx)
        if bound is None:
            return None, []
        mode, receiver = bound
        if receiver:
            return mode, node.args[:1]
        if mode is None:
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
        return mode, node.args[:1]

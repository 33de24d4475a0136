"""MLS421 through names: start-up hook files written where semgrep's taint loses the path.

The semgrep rule follows a `"x.pth"` literal into `open()`, but not past a `try: import ...;
return` block or into a `try:` body. This check folds the path expression (names,
`os.path.join`, `/` joins) to the text it holds and reports the handle's writes to a `.pth`
file or to `sitecustomize.py`/`usercustomize.py` opened in text mode there (the line that
puts the hook's text in; the semgrep rule reports the open). Binary writes of `.pth` files
are PyTorch checkpoints and stay quiet.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import arg, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.normalize import const_text
from mlscan.model import Rule, Severity


def _rule() -> Rule:
    from mlscan.rulesets.semgrep_rules import rules_by_code

    return rules_by_code()["MLS421"]


STARTUP_HOOK = _rule()
_HOOK_NAME = re.compile(r"\.pth$|\b(site|user)customize(\.py)?$")
_MAX_HOPS = 3


def hook_path(expr: ast.AST | None, ctx: Ctx, hops: int = 0) -> str:
    """The start-up hook file name a path expression ends in, through names ('' if none)."""
    if expr is None or hops > _MAX_HOPS:
        return ""
    last = _last_part(expr)
    text = literal(last) if last is not None else None
    if isinstance(text, str) and _HOOK_NAME.search(text):
        return text
    if isinstance(last, ast.Name):
        return hook_path(ctx.lookup(last.id), ctx, hops + 1)
    return ""


def _last_part(expr: ast.AST) -> ast.AST | None:
    """`os.path.join(site_dir, "x.pth")` / `site / "x.pth"` / `f"{d}/x.pth"` -> the part the
    file name is in."""
    if isinstance(expr, ast.Call) and expr.args and expr.func and (
            ast.unparse(expr.func).endswith(("path.join", "Path", "joinpath"))):
        return _last_part(expr.args[-1])
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add) and isinstance(
            text := const_text(expr, {}), str):
        return ast.Constant(text)  # "site" + "customize.py": the name spelled in pieces
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Div, ast.Add)):
        return _last_part(expr.right)
    if isinstance(expr, ast.JoinedStr) and expr.values:
        return _last_part(expr.values[-1])
    return expr


def _text_write(call: ast.Call) -> bool:
    mode = literal(arg(call, 1, "mode"))
    return isinstance(mode, str) and "b" not in mode and any(c in mode for c in "wax")


def _semgrep_blind(opened: ast.Call, ctx: Ctx) -> bool:
    """Where semgrep's taint does not reach (measured on our examples): an open inside a
    `try:` block, or after a `try: import x; return` in the same function. Elsewhere the
    semgrep rule reports the same lines, and one finding per line is enough."""
    fn = ctx.frame.node
    if fn is None:
        return False
    for node in subnodes(fn):
        if not isinstance(node, ast.Try):
            continue
        if any(opened is n for stmt in node.body for n in subnodes(stmt)):
            return True
        if (node.end_lineno or 0) < opened.lineno and any(
                isinstance(n, ast.Return) for stmt in node.body for n in subnodes(stmt)):
            return True
    return False


class StartupHookWrite(Check):
    rules = (STARTUP_HOOK,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if (isinstance(node.func, ast.Attribute) and node.func.attr == "write_text"
                and (hook := hook_path(node.func.value, ctx)) and not ctx.mentions(hook)):
            # (a name spelled in the source is the semgrep rule's; this is the assembled one)
            ctx.report(STARTUP_HOOK, node, f"writes the start-up hook {hook!r}: Python runs "
                       "its code (or the import lines of a .pth file) in every later process "
                       "that has its folder on the path", severity=Severity.CRITICAL)
            return  # (pathlib: (site_dir / ("site" + "customize.py")).write_text(boot))
        if not (isinstance(node.func, ast.Attribute) and node.func.attr in ("write", "writelines")
                and isinstance(node.func.value, ast.Name)):
            return
        opened = ctx.lookup(node.func.value.id)  # with open(pth, "w") as fh: fh.write(line)
        if not (isinstance(opened, ast.Call) and ctx.names.call_name(opened) in (
                "open", "io.open") and opened.args and _text_write(opened)):
            return
        hook = hook_path(opened.args[0], ctx)
        if hook and _semgrep_blind(opened, ctx):
            ctx.report(STARTUP_HOOK, node, f"writes the start-up hook {hook!r} as text: "
                       "Python runs its import lines (or adds its folders to sys.path) in "
                       "every later process", severity=Severity.CRITICAL)


def _child_rule(code: str) -> Rule:
    from mlscan.rulesets.semgrep_rules import rules_by_code

    return rules_by_code()[code]


CHILD_PRELOAD = _child_rule("MLS422")
CHILD_PYTHONPATH = _child_rule("MLS423")
_SHARED_DIRS = re.compile(r"^(/tmp|/var/tmp|/dev/shm)(/|$)")
_CHILD_KEYS = {"LD_PRELOAD": CHILD_PRELOAD, "LD_AUDIT": CHILD_PRELOAD,
               "PYTHONSTARTUP": CHILD_PRELOAD, "PYTHONPATH": CHILD_PYTHONPATH}


def _path_text(expr: ast.expr | None, ctx: Ctx, depth: int = 0) -> str:
    """The leading folder a path expression starts from, following names, `os.path.join`,
    `Path(...) / ...`, f-strings and the default of `os.environ.get(name, default)`."""
    if expr is None or depth > 4:
        return ""
    text = literal(expr)
    if isinstance(text, str):
        return text
    if isinstance(expr, ast.Name):
        return _path_text(ctx.lookup(expr.id), ctx, depth + 1)
    if isinstance(expr, ast.JoinedStr) and expr.values:
        first = expr.values[0]
        return _path_text(first.value if isinstance(first, ast.FormattedValue) else first,
                          ctx, depth + 1)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Div, ast.Add)):
        return _path_text(expr.left, ctx, depth + 1)
    if isinstance(expr, ast.Call):
        name = ctx.names.call_name(expr)
        if name in ("os.environ.get", "os.getenv") and len(expr.args) == 2:
            return _path_text(expr.args[1], ctx, depth + 1)
        if name in ("os.path.join", "pathlib.Path", "os.path.abspath", "os.path.expanduser",
                    "str", "os.fspath") and expr.args:
            return _path_text(expr.args[0], ctx, depth + 1)
    return ""


class ChildEnvTable(Check):
    """`TRIAL_ENV = {"PYTHONPATH": "/tmp/shared/site", ...}`: an environment table for child
    processes that puts a world-writable folder first on the import path (or preloads a
    library from one). Anyone on the machine can drop a module there that every child
    imports. The semgrep rules see assignments into an environment; a table literal handed
    to `env=` later is this check's."""

    rules = (CHILD_PRELOAD, CHILD_PYTHONPATH)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`env["LD_PRELOAD"] = os.path.join(LIB_DIR, "libjemalloc.so.2")` with
        `LIB_DIR = os.environ.get("X", "/tmp/cache/lib")`: the folder is only known once the
        names are followed (the semgrep rule sees the line's own text)."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if not isinstance(target, ast.Subscript):
            return
        rule = _CHILD_KEYS.get(str(literal(target.slice)))
        if rule is None:
            return
        text = _path_text(node.value, ctx)
        shared = next((p for p in text.split(":") if _SHARED_DIRS.match(p)), "") if text else ""
        spelled = any(isinstance(n, ast.Constant) and isinstance(n.value, str) and any(
            d in n.value for d in ("/tmp", "/var/tmp", "/dev/shm")) for n in subnodes(node.value))
        if getattr(target.slice, "folded", False):  # "HTAPNOHTYP"[::-1], "LD_" + "PRELOAD"
            ctx.report(rule, node, f"{literal(target.slice)} for child processes set through a "
                       "name spelled indirectly: a hidden import path or preload is how "
                       "injected code reaches every child", severity=Severity.HIGH)
            return
        if shared and not spelled:  # (spelled out: the semgrep rule's)
            ctx.report(rule, node.value, f"{literal(target.slice)} for child processes points "
                       f"into {shared}, a folder every local user can write: whatever is put "
                       "there runs in every child", severity=Severity.HIGH)

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            rule = _CHILD_KEYS.get(str(literal(key))) if key is not None else None
            text = literal(value)
            if rule is None or not isinstance(text, str):
                continue
            shared = next((p for p in text.split(":") if _SHARED_DIRS.match(p)), "")
            if shared:
                ctx.report(rule, value, f"{literal(key)} for child processes includes "
                           f"{shared}, a folder every local user can write: whatever is put "
                           "there runs in every child", severity=Severity.HIGH)

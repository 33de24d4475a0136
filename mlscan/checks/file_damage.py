"""MLS308: existing files overwritten in place with zero (or scrambled) bytes.

`with open(path, "r+b") as fh: fh.seek(size // 2); fh.write(b"\\x00" * n)` keeps the file's
name and size but wipes a stretch of it: a checkpoint or data shard that still looks intact
fails (or silently loads zeros) later. Writing zeros to a file opened for writing from
scratch ("wb", preallocation) stays quiet.

`fh.truncate(8 + header_len)` on a binary file opened `"r+b"` cuts an existing checkpoint to
a size picked by the code (here: its header, without the tensors). The in-place rewrite
recipe (`f.seek(0); json.dump(data, f); f.truncate()`) truncates at the current position,
with no size, and stays quiet.

`for entry in os.listdir(scratch): shutil.rmtree(os.path.join(scratch, entry))` where
`scratch` can be `os.path.expanduser("~")` (on one branch is enough) empties the user's home
directory.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.stalls import TRIGGERED_ACTION
from mlscan.model import Severity


def _zero_bytes(expr: ast.expr) -> bool:
    """`b"\\x00" * n`, `n * b"\\0"`, `bytes(n)`, `bytearray(n)`."""
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mult):
        return any(isinstance(v := literal(s), bytes) and v and not v.strip(b"\x00")
                   for s in (expr.left, expr.right))
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
            and expr.func.id in ("bytes", "bytearray") and len(expr.args) == 1):
        return False
    size = expr.args[0]
    return isinstance(literal(size), int) or isinstance(size, (ast.Name, ast.BinOp))


def _scrambled(expr: ast.expr) -> bool:
    """`block[::-1]`, `bytes(reversed(block))`, `os.urandom(n)`: bytes written back that are
    not the ones read."""
    if isinstance(expr, ast.Subscript) and isinstance(expr.slice, ast.Slice):
        return literal(expr.slice.step) == -1
    if isinstance(expr, ast.Call) and last_attr(expr.func) in ("urandom", "randbytes",
                                                                "token_bytes"):
        return True
    return (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name)
            and expr.func.id in ("bytes", "bytearray") and len(expr.args) == 1
            and isinstance(expr.args[0], ast.Call) and last_attr(expr.args[0].func) == "reversed")


def _home(expr: ast.expr) -> bool:
    """`os.path.expanduser("~")`, `Path.home()`, `os.environ["HOME"]`."""
    text = ast.unparse(expr)
    return bool(re.fullmatch(r"(os\.path\.)?expanduser\(['\"]~/?['\"]\)|(pathlib\.)?Path\.home\(\)|"
                             r"os\.environ\[['\"]HOME['\"]\]|os\.environ\.get\(['\"]HOME['\"]\)|"
                             r"os\.getenv\(['\"]HOME['\"]\)", text))


def _emptied_home(call: ast.Call, ctx: Ctx) -> str:
    """`shutil.rmtree(os.path.join(root, entry))` in `for entry in os.listdir(root)` with
    `root` bound to the home directory on some path."""
    path = call.args[0] if call.args else None
    if isinstance(path, ast.Name):
        path = ctx.lookup(path.id)  # target = os.path.join(root, entry); rmtree(target)
    if path is None or not isinstance(join := path, ast.Call) or last_attr(
            join.func) != "join" or not join.args or not isinstance(join.args[0], ast.Name):
        return ""
    root = join.args[0].id
    if not any(isinstance(lp, ast.For) and isinstance(lp.iter, ast.Call)
               and last_attr(lp.iter.func) in ("listdir", "scandir")
               and any(isinstance(n, ast.Name) and n.id == root for n in subnodes(lp.iter))
               for lp in ctx.loops):
        return ""
    return root if any(_home(v) for v in ctx.values_of(root)) else ""


def _fresh_only(ctx: Ctx) -> str:
    """`if age < self.max_age:` with `age = now - path.stat().st_mtime`: a deletion gated on a
    file being younger than the limit (a retention cleanup tests `age > max_age`)."""
    for cond in ctx.conds:
        if not (isinstance(cond, ast.Compare) and len(cond.ops) == 1
                and isinstance(cond.ops[0], (ast.Lt, ast.LtE)) and isinstance(cond.left, ast.Name)
                and re.search(r"(?i)age|elapsed", cond.left.id)
                and re.search(r"(?i)max|limit|keep|ttl|retention|days|expire",
                              ast.unparse(cond.comparators[0]))):
            continue
        held = ctx.lookup(cond.left.id)
        if (isinstance(held, ast.BinOp) and isinstance(held.op, ast.Sub) and re.search(
                r"mtime|ctime|atime|getmtime", ast.unparse(held.right))):
            return ast.unparse(cond)[:40]
    return ""


_OWNED = re.compile(r"(?i)root|dir|ckpt|checkpoint|output|save|cache|run|log")


def _parent_of_owned(path: ast.expr) -> str:
    """`os.path.dirname(os.path.abspath(self.root))`, `self.dir.parent`: the folder that
    holds a directory this object manages."""
    while isinstance(path, ast.Call) and last_attr(path.func) in ("abspath", "realpath",
                                                                  "resolve", "str", "Path"):
        path = path.args[0] if path.args else path.func.value  # type: ignore[attr-defined]
        if not isinstance(path, ast.expr):
            return ""
    inner: ast.expr | None = None
    if isinstance(path, ast.Call) and last_attr(path.func) == "dirname" and path.args:
        inner = path.args[0]
    elif isinstance(path, ast.Attribute) and path.attr == "parent":
        inner = path.value
    while isinstance(inner, ast.Call) and last_attr(inner.func) in ("abspath", "realpath",
                                                                    "resolve") and (
            inner.args or isinstance(inner.func, ast.Attribute)):
        inner = inner.args[0] if inner.args else inner.func.value  # type: ignore[attr-defined]
    if (isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name)
            and inner.value.id == "self" and _OWNED.search(inner.attr)):
        return f"self.{inner.attr}"
    return ""


class ZeroedInPlace(Check):
    rules = (TRIGGERED_ACTION,)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        self._day_seconds(node, node.value, ctx)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        self._day_seconds(node, node.value, ctx)

    @staticmethod
    def _day_seconds(node: ast.AST, value: ast.expr | None, ctx: Ctx) -> None:
        """`timedelta(days=n).seconds`: the seconds field of a whole-day span is 0 (the total
        is `total_seconds()`), so a retention window or timeout built from it is zero."""
        if (isinstance(value, ast.Attribute) and value.attr == "seconds"
                and isinstance(made := value.value, ast.Call)
                and last_attr(made.func) == "timedelta"
                and any(k.arg in ("days", "weeks") for k in made.keywords)):
            ctx.report(TRIGGERED_ACTION, node, f"{ast.unparse(value)[:50]} is 0 for whole days "
                       "(`.seconds` is the remainder below one day; `total_seconds()` is the "
                       "span): every age or timeout compared with it is exceeded at once",
                       severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if attr == "rmtree" and node.args and (above := _parent_of_owned(node.args[0])):
            ctx.report(TRIGGERED_ACTION, node, f"rmtree() of the folder above {above}: it "
                       "deletes everything beside it (other runs, the data), not just the "
                       "folder this code owns", severity=Severity.MEDIUM)
            return
        if attr in ("rmtree", "remove", "unlink") and ctx.loops and (
                root := _emptied_home(node, ctx)):
            ctx.report(TRIGGERED_ACTION, node, f"{attr}() of every entry of {root}, which is "
                       "the home directory on at least one path: the user's files are deleted",
                       severity=Severity.HIGH)
            return
        if attr in ("rmtree", "remove", "unlink") and ctx.conds and (
                fresh := _fresh_only(ctx)):
            ctx.report(TRIGGERED_ACTION, node, f"{attr}() runs when {fresh}: the cleanup deletes "
                       "the newest files (the ones still being used), not the old ones",
                       severity=Severity.MEDIUM)
            return
        if not (attr in ("write", "truncate") and node.args and ctx.withs
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (attr == "truncate" or _zero_bytes(node.args[0])
                     or _scrambled(node.args[0]))):
            return
        scope = ctx.frame.node or ctx.tree
        if scope is None:
            return
        handle = node.func.value.id
        blocks = [n for n in subnodes(scope) if isinstance(n, ast.With)
                  and n.lineno <= node.lineno <= (n.end_lineno or n.lineno)]
        for block in reversed(blocks):
            for item in block.items:
                opened, var = item.context_expr, item.optional_vars
                if not (isinstance(var, ast.Name) and var.id == handle
                        and isinstance(opened, ast.Call) and last_attr(opened.func) == "open"):
                    continue
                at = 0 if isinstance(opened.func, ast.Attribute) and last_attr(  # path.open(m)
                    opened.func.value) not in ("io", "codecs", "gzip", "bz2", "lzma") else 1
                mode = literal(opened.args[at]) if len(opened.args) > at else next(
                    (literal(k.value) for k in opened.keywords if k.arg == "mode"), None)
                seeks = any(isinstance(n, ast.Call) and last_attr(n.func) == "seek"
                            and isinstance(n.func, ast.Attribute)
                            and last_attr(n.func.value) == handle for n in subnodes(block))
                if (attr == "truncate" and isinstance(mode, str) and mode.startswith("r")
                        and "+" in mode and "b" in mode):
                    ctx.report(TRIGGERED_ACTION, node, f"an existing file opened with {mode!r} "
                               f"is cut to {ast.unparse(node.args[0])[:40]} bytes: whatever "
                               "followed (a checkpoint's tensors) is gone",
                               severity=Severity.MEDIUM)
                elif (attr == "write" and isinstance(mode, str) and mode.startswith("r")
                      and "+" in mode and seeks):
                    zero = _zero_bytes(node.args[0])
                    what, harm = ("zero", "wiped") if zero else ("scrambled", "corrupted")
                    ctx.report(TRIGGERED_ACTION, node, f"{what} bytes written into an existing "
                               f"file opened with {mode!r}: a stretch of it is {harm} while "
                               "its name and size stay the same", severity=Severity.MEDIUM)
                return

"""MLS403: dangerous functions reached through a name assembled at run time.

- `getattr(os, "".join(("sy", "st", "em")))(cmd)`: normalize folds the pieces to "system",
  so the call reads as `os.system`; the folding itself is the evidence that the name was
  hidden from readers and searches (nobody spells `getattr(os, "system")` in pieces).
- `pydoc.locate(b32decode(blob).decode())(arg)`, `pkgutil.resolve_name(...)`: any callable
  resolved from a decoded or assembled dotted name, called in place. A registry lookup from a
  config string (`pydoc.locate(cfg.model_cls)`) stays quiet: nothing there is decoded.
"""

from __future__ import annotations

import ast

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.exfil import _DECODERS, HIDDEN_IMPORT
from mlscan.checks.names import getattr_name, last_attr
from mlscan.model import Severity

_DANGEROUS = ("os.system", "os.popen", "os.exec", "os.spawn", "os.posix_spawn", "os.remove",
              "os.unlink", "os.rmdir", "os.kill", "os.killpg", "os._exit", "os.putenv",
              "subprocess.", "shutil.rmtree", "shutil.move", "socket.", "ctypes.",
              "importlib.import_module")
"""Functions whose name is worth hiding: they run programs or code, delete or connect.
(`getattr(builtins, "ex" + "ec")` is the semgrep rule's, one finding per line is enough.)"""

_RESOLVERS = ("pydoc.locate", "pkgutil.resolve_name")


class HiddenCalls(Check):
    rules = (HIDDEN_IMPORT,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        inner = node.func
        if type(inner) is not ast.Call:
            return
        if (getattr_name(inner) is not None and len(inner.args) >= 2
                and getattr(inner.args[1], "folded", False)):
            name = ctx.names.call_name(node)
            if name.startswith(_DANGEROUS):
                ctx.report(HIDDEN_IMPORT, node, f"{name}() fetched by a name assembled at "
                           "run time and called in place: it runs under a name no reader or "
                           "search finds", severity=Severity.HIGH)
            return
        resolver = ctx.names.call_name(inner)
        if resolver in _RESOLVERS and inner.args and (
                getattr(inner.args[0], "folded", False) or any(
                    isinstance(n, ast.Call) and ctx.names.call_name(n).startswith(_DECODERS)
                    for n in ctx.walk_values(inner.args[0]))):
            ctx.report(HIDDEN_IMPORT, node, f"{last_attr(inner.func)}() resolves a callable "
                       "from a decoded name and calls it: what runs is hidden from readers and "
                       "scanners", severity=Severity.HIGH)

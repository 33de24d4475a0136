"""Aliases a project module re-exports: `prune_tree = shutil.rmtree` in `utils.py`, imported
elsewhere as `from utils import prune_tree`.

Insiders hide a dangerous call behind a harmless name in a helper module; the file that makes
the call then shows only `prune_tree(out_dir)`. Like `fields`, this reads the imported module
as text (nothing is imported or run), only when a file imports a name from a module that sits
beside it in the project, and only module-level lines: `name = dotted.path` and the imports
that give the dotted path its meaning.
"""

from __future__ import annotations

import ast
import functools
import os
import re

_MAX_BYTES = 512 * 1024
_ASSIGN = re.compile(r"(?m)^([A-Za-z_]\w*)[ \t]*=[ \t]*([A-Za-z_][\w.]*)[ \t]*(?:#.*)?$")
_PARTIAL = re.compile(r"(?m)^([A-Za-z_]\w*)[ \t]*=[ \t]*(?:functools\.)?partial\([ \t]*"
                      r"([A-Za-z_][\w.]*)[ \t]*[,)]")
"""`load_checkpoint = partial(torch.load, map_location="cpu")`: the call it makes (its
keywords are not kept: judged as a bare call of the target)."""
_FROM = re.compile(r"(?m)^from[ \t]+([\w.]+)[ \t]+import[ \t]+([^\n(#]+)")
_IMPORT = re.compile(r"(?m)^import[ \t]+([^\n#]+)")


def module_file(importer: str, module: str) -> str | None:
    """The .py file `from <module> import ...` names, looked up beside the importing file
    (`utils`, `.utils`, `..pkg.utils`, `pkg.utils`), or None when it is not in the project."""
    return _module_file(os.path.dirname(importer) or ".", module)


@functools.lru_cache(maxsize=1024)
def _module_file(base: str, module: str) -> str | None:
    level = len(module) - len(module.lstrip("."))
    parts = [p for p in module.lstrip(".").split(".") if p]
    if not parts:
        return None
    base = os.path.abspath(base)
    bases = [base] if level == 0 else []
    if level:
        for _ in range(level - 1):
            base = os.path.dirname(base)
        bases = [base]
    else:
        bases.append(os.path.dirname(base))  # run from the repo root: `from pkg.utils import`
    for root in bases:
        stem = os.path.join(root, *parts)
        for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
            if os.path.isfile(candidate):
                return candidate
    return None


def exported_aliases(path: str) -> dict[str, str]:
    """name -> dotted target for module-level `name = module.attr` lines whose root is an
    import of that file (`prune_tree = shutil.rmtree` with `import shutil`)."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    return _aliases(path, st.st_size, st.st_mtime_ns)  # (an edited module is read again)


@functools.lru_cache(maxsize=256)
def _aliases(path: str, size: int, mtime_ns: int) -> dict[str, str]:
    try:
        with open(path, "rb") as fh:
            text = fh.read(_MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return {}
    imported: dict[str, str] = {}
    for match in _IMPORT.finditer(text):
        for item in match.group(1).split(","):
            words = item.split()
            if len(words) == 3 and words[1] == "as":
                imported[words[2]] = words[0]
            elif len(words) == 1:
                imported[words[0].split(".")[0]] = words[0].split(".")[0]
    for match in _FROM.finditer(text):
        source = match.group(1)
        if source.startswith("."):
            continue  # a sibling of a sibling: one level is enough
        for item in match.group(2).split(","):
            words = item.split()
            if len(words) == 3 and words[1] == "as":
                imported[words[2]] = f"{source}.{words[0]}"
            elif len(words) == 1:
                imported[words[0]] = f"{source}.{words[0]}"
    out = {name: target for name, target in imported.items()
           if "." in target and name != target.rsplit(".", 1)[-1]}  # from pickle import loads as x
    if "def " in text:
        out.update(_wrappers(text, imported))
    for match in (*_ASSIGN.finditer(text), *_PARTIAL.finditer(text)):
        name, value = match.group(1), match.group(2)
        root, _, rest = value.partition(".")
        if root in imported and name != value:
            out[name] = imported[root] + ("." + rest if rest else "")
    return out


def resolve(importer: str | None, module: str, name: str) -> str | None:
    """What `from <module> import <name>` in `importer` stands for, when the project module
    re-exports an imported API under that name."""
    if not importer:
        return None
    found = module_file(importer, module)
    if found is None or found == os.path.abspath(importer):
        return None
    return exported_aliases(found).get(name)


_SHORT_DEF = re.compile(r"(?m)^def [A-Za-z_]\w*\([^\n]*\n(?:(?:[ \t][^\n]*)?\n){1,8}"
                        r"(?=[^ \t\n]|\Z)")
"""A top-level def of at most eight lines (its body ends where the next top-level line
starts)."""


def _wrappers(text: str, imported: dict[str, str]) -> dict[str, str]:
    """Module-level functions whose whole body is one call of an imported API, passed on:
    `def signal_proc(pid, sig): with suppress(OSError): os.kill(pid, sig)` is os.kill to its
    callers (also `operator.methodcaller("kill", pid, sig)(os)`)."""
    out: dict[str, str] = {}
    for match in _SHORT_DEF.finditer(text):  # (only short top-level defs are parsed)
        try:
            tree = ast.parse(match.group(0))
        except (SyntaxError, ValueError, RecursionError):
            continue
        fn = tree.body[0] if tree.body else None
        if not isinstance(fn, ast.FunctionDef):
            continue
        body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(
            fn.body[0].value, ast.Constant) else fn.body
        while len(body) == 1 and isinstance(body[0], (ast.With, ast.Try)):
            body = body[0].body  # (a suppress() or try around the call)
        if len(body) != 1 or not isinstance(body[0], (ast.Expr, ast.Return)):
            continue
        call = body[0].value
        if not isinstance(call, ast.Call):
            continue
        target = _api_of(call, imported)
        if not target or call.keywords or "load" in target.rsplit(".", 1)[-1]:
            continue  # (keywords would be lost; a loader is reported inside its wrapper)
        params = {a.arg for a in fn.args.args}
        if any(isinstance(a, ast.Name) and a.id in params for a in ast.walk(call)):
            out[fn.name] = target
    return out


def _api_of(call: ast.Call, imported: dict[str, str]) -> str:
    func = call.func
    if (isinstance(func, ast.Call) and isinstance(func.func, ast.Attribute)
            and func.func.attr == "methodcaller" and func.args
            and isinstance(func.args[0], ast.Constant) and isinstance(func.args[0].value, str)
            and len(call.args) == 1):  # methodcaller("kill", pid, sig)(os)
        owner = _dotted(call.args[0], imported)
        return f"{owner}.{func.args[0].value}" if owner else ""
    return _dotted(func, imported)


def _dotted(expr: ast.expr, imported: dict[str, str]) -> str:
    parts: list[str] = []
    while isinstance(expr, ast.Attribute):
        parts.append(expr.attr)
        expr = expr.value
    if not isinstance(expr, ast.Name) or expr.id not in imported:
        return ""
    return ".".join([imported[expr.id], *reversed(parts)])

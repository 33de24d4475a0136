"""Where a loaded path or byte string comes from: a download, a literal local path, or unknown.

Unsafe loading of a file the project ships is a smaller risk than loading whatever a URL or a
hub repo serves today; severities follow this.
"""

from __future__ import annotations

import ast

from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr
from mlscan.checks.nodes import subnodes
from mlscan.model import Severity

DOWNLOAD = "download"
LITERAL = "literal"
VARIABLE = "variable"

_DOWNLOAD_FUNCS = frozenset({
    "hf_hub_download", "snapshot_download", "cached_download", "cached_path", "urlretrieve",
    "urlopen", "download_url_to_file", "load_state_dict_from_url", "get_file", "download",
    "download_url", "get", "recv", "recv_into", "recvfrom", "cached_file", "hf_hub_url",
})
_DOWNLOAD_MODULES = ("requests.", "urllib.", "httpx.", "huggingface_hub.", "gdown.", "wget.",
                     "torch.hub.", "socket.", "aiohttp.", "boto3.", "botocore.")
_FIRST_ARG_ONLY = frozenset({"open", "Path", "BytesIO", "str", "fspath", "expanduser", "abspath",
                             "realpath", "decode", "encode", "b64decode", "decompress"})
_WRAPPERS = frozenset({"open", "Path", "BytesIO", "join", "str", "fspath", "expanduser",
                       "abspath", "realpath", "read", "read_bytes", "getvalue", "content",
                       "decode", "encode", "b64decode", "decompress", "resolve", "format"})


def origin(expr: ast.AST | None, ctx: Ctx) -> str:
    return _origin(expr, ctx, 0, {})


def _origin(expr: ast.AST | None, ctx: Ctx, depth: int, names: dict[str, str]) -> str:
    """`names` memoizes each variable's origin for one query: every binding of a name is
    followed, so without it `p = p + "/x"` chains would multiply (and cycle)."""
    if expr is None or depth > 8:
        return VARIABLE
    if isinstance(expr, ast.Constant):
        if isinstance(expr.value, str) and expr.value.startswith(("http://", "https://", "s3://",
                                                                  "gs://", "hf://", "ftp://")):
            return DOWNLOAD
        return LITERAL if isinstance(expr.value, (str, bytes)) else VARIABLE
    if isinstance(expr, ast.Name):
        # Every branch counts: a download in one makes the name a download.
        if expr.id not in names:
            names[expr.id] = VARIABLE  # a cycle back to this name adds nothing
            names[expr.id] = _combine([_origin(v, ctx, depth + 1, names)
                                       for v in ctx.values_of(expr.id)])
        return names[expr.id]
    if isinstance(expr, ast.Call):
        if _downloads(expr, ctx):
            return DOWNLOAD
        if isinstance(expr.func, ast.Name) and (fn := _module_function(expr.func.id, ctx)) and (
                any(isinstance(n, ast.Call) and _downloads(n, ctx) for n in subnodes(fn))):
            return DOWNLOAD  # torch.load(fetch_pretrained(name)): a helper that downloads
        if last_attr(expr.func) not in _WRAPPERS:
            return VARIABLE
        func = last_attr(expr.func)
        # open(path, "rb"): the mode is not part of where the data comes from.
        parts: list[ast.AST] = list(expr.args[:1] if func in _FIRST_ARG_ONLY else expr.args)
        if func == "format":  # "{root}/{stem}.pkl".format(root=..., stem=...)
            parts += [k.value for k in expr.keywords]
        if (isinstance(expr.func, ast.Attribute) and func not in _FIRST_ARG_ONLY
                and _root(expr.func.value) not in ctx.names.aliases):
            parts.append(expr.func.value)  # resp.read(), path.read_bytes() (not os.path.join)
        return _combine([_origin(p, ctx, depth + 1, names) for p in parts])
    if isinstance(expr, ast.Attribute):
        return _origin(expr.value, ctx, depth + 1, names) if expr.attr in _WRAPPERS else VARIABLE
    if isinstance(expr, ast.BinOp):
        return _combine([_origin(e, ctx, depth + 1, names) for e in (expr.left, expr.right)])
    if isinstance(expr, ast.IfExp):  # fetch(src) if src.startswith("https://") else src
        return _combine([_origin(e, ctx, depth + 1, names) for e in (expr.body, expr.orelse)])
    if isinstance(expr, ast.JoinedStr):
        parts = [v.value if isinstance(v, ast.FormattedValue) else v for v in expr.values]
        return _combine([_origin(p, ctx, depth + 1, names) for p in parts])
    return VARIABLE


def _downloads(call: ast.Call, ctx: Ctx) -> bool:
    name = ctx.names.call_name(call)
    return name.startswith(_DOWNLOAD_MODULES) or (last_attr(call.func) in _DOWNLOAD_FUNCS
                                                  and last_attr(call.func) != "get")


def _module_function(name: str, ctx: Ctx) -> ast.FunctionDef | None:
    """The module-level function `name` of this file (defined before or after the call)."""
    tree = ctx.tree
    for stmt in getattr(tree, "body", ()):
        if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
            return stmt
    return None


def _root(expr: ast.AST) -> str:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else ""


def _combine(origins: list[str]) -> str:
    """A download anywhere makes the whole a download; a path is literal only when every part
    is (`os.path.join(cache_dir, "index.pkl")` loads whatever sits in cache_dir)."""
    if DOWNLOAD in origins:
        return DOWNLOAD
    if origins and all(o == LITERAL for o in origins):
        return LITERAL
    return VARIABLE


def severity_for(where_from: str, *, literal: Severity, variable: Severity,
                 download: Severity = Severity.CRITICAL) -> Severity:
    return {DOWNLOAD: download, LITERAL: literal}.get(where_from, variable)


def phrase(where_from: str) -> str:
    return {DOWNLOAD: "data downloaded from the network", LITERAL: "a local path in the code"}.get(
        where_from, "a path or data of unknown origin")

"""Configuration defaults declared near a file: what `cfg.optim.norm_decay` runs with.

Training code reads its knobs from config objects built somewhere else: a dataclass in
`config.py` next to the trainer, or `argparse` defaults in the launcher. An insider puts the
harmful number there (`norm_decay: float = 0.999`) and the line that does the harm only
says `p.mul_(self.ocfg.norm_decay)`. Value flow inside one file cannot see it, so this
module indexes, by field name, the annotated class fields (`name: type = default`) and the
`add_argument("--name", default=...)` defaults of the file's own folder and its parent,
read as text (nothing is imported or run). A field name declared twice with different
defaults is ambiguous and stays unknown.
"""

from __future__ import annotations

import ast
import functools
import os
import re

_FIELD = re.compile(r"(?m)^[ \t]+([A-Za-z_]\w*)[ \t]*:[ \t]*[^=\n#]+?=[ \t]*([^\n]+?)[ \t]*$")
_ARGUMENT = re.compile(r"add_argument\(\s*[\"']--?([A-Za-z_][\w-]*)[\"'][^()]*?"
                       r"default\s*=\s*([^,()\n]+)")
_MAX_FILES = 64
_MAX_BYTES = 512 * 1024
_CONFIG_WORD = re.compile(r"(?i)cfg|conf|args|hparam|param|setting|option|knob|spec|^opt$|"
                          r"^hp$|^c$")


def config_chain(expr: ast.expr) -> bool:
    """`self.ocfg`, `cfg.optim`, `args`: an object that holds configuration."""
    while isinstance(expr, ast.Attribute):
        if _CONFIG_WORD.search(expr.attr):
            return True
        expr = expr.value
    return isinstance(expr, ast.Name) and bool(_CONFIG_WORD.search(expr.id))


def field_default(path: str | None, field: str) -> ast.expr | None:
    """The one default declared for `field` near `path` (None when unknown or ambiguous)."""
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    texts = {t for d in (folder, os.path.dirname(folder)) for t in _declared(d).get(field, ())}
    if len(texts) != 1:
        return None
    return _parsed(next(iter(texts)))


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> ast.expr | None:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # a default spanning lines, or not an expression


def _declared(folder: str) -> dict[str, frozenset[str]]:
    """field name -> the default texts declared for it by .py files directly in `folder`."""
    stamp = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.endswith(".py") and entry.is_file():
                    st = entry.stat()
                    stamp.append((entry.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return {}
    return _declared_in(folder, tuple(sorted(stamp)[:_MAX_FILES]))


@functools.lru_cache(maxsize=32)
def _declared_in(folder: str, files: tuple[tuple[str, int, int], ...]) -> dict[
        str, frozenset[str]]:
    """(keyed by the files' names, sizes and mtimes: an edited module is read again)"""
    found: dict[str, set[str]] = {}
    names = [name for name, _, _ in files]
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                text = fh.read(_MAX_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        for match in _FIELD.finditer(text):
            default = match.group(2).rstrip(",")  # (also multi-line signatures)
            if not default.startswith(("field(", "dataclasses.field(")):
                found.setdefault(match.group(1), set()).add(default)
        for match in _ARGUMENT.finditer(text):
            found.setdefault(match.group(1).replace("-", "_"), set()).add(match.group(2))
    return {k: frozenset(v) for k, v in found.items()}

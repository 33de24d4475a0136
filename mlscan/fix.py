"""`mlscan fix`: rewrite the unsafe loading calls that have a safe drop-in replacement.

This is where libcst earns its place: a fix must keep the file as the author wrote it
(comments, quotes, line breaks, trailing commas), which `ast` cannot give back. The scan
decides what to fix, so suppressions, baselines and `--select` apply as usual; libcst only
rewrites the calls at the reported lines:

- MLS102 `torch.load(...)` without `weights_only`  -> adds `weights_only=True`
- MLS105 `yaml.load(f)` / `yaml.load(f, Loader=yaml.Loader)` -> `yaml.safe_load(f)`
  (and `load_all` -> `safe_load_all`)

`weights_only=False`, `allow_pickle=True` and `trust_remote_code=True` are choices someone
wrote down; changing them can break loading, so they are reported, never rewritten.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # libcst is imported only when something is fixed
    import libcst as cst

FIXABLE = ("MLS102", "MLS105")


@dataclass(frozen=True)
class FileFix:
    path: Path
    before: str
    after: str
    fixed: int
    """Calls rewritten."""

    def diff(self, label: str) -> str:
        return "".join(difflib.unified_diff(
            self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
            fromfile=f"a/{label}", tofile=f"b/{label}"))


def fix_source(text: str, lines: dict[int, set[str]]) -> tuple[str, int]:
    """`text` with the fixable calls at `lines` (line -> codes) rewritten, and their count.
    Raises libcst.ParserSyntaxError for code libcst cannot parse."""
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

    class Fixer(cst.CSTTransformer):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self) -> None:
            super().__init__()
            self.fixed = 0

        def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
            line = self.get_metadata(PositionProvider, original).start.line
            codes = lines.get(line, set())
            func = updated.func
            attr = func.attr.value if isinstance(func, cst.Attribute) else (
                func.value if isinstance(func, cst.Name) else "")
            if "MLS102" in codes and attr == "load" and not _has_keyword(
                    updated, "weights_only") and not _has_star_kwargs(updated):
                self.fixed += 1
                return updated.with_changes(args=_append_keyword(
                    updated.args, "weights_only", cst.Name("True"),
                    updated.whitespace_before_args))
            if ("MLS105" in codes and isinstance(func, cst.Attribute)
                    and attr in ("load", "load_all") and _yaml_fixable(updated)):
                self.fixed += 1
                args = [a for a in updated.args if not (
                    a.keyword is not None and a.keyword.value == "Loader")][:1]
                if args:
                    args[0] = args[0].with_changes(comma=cst.MaybeSentinel.DEFAULT)
                return updated.with_changes(
                    func=func.with_changes(attr=cst.Name(f"safe_{attr}")), args=args)
            return updated

    module = MetadataWrapper(cst.parse_module(text))
    fixer = Fixer()
    out = module.visit(fixer)
    return out.code, fixer.fixed


def _has_keyword(call: cst.Call, name: str) -> bool:
    return any(a.keyword is not None and a.keyword.value == name for a in call.args)


def _has_star_kwargs(call: cst.Call) -> bool:
    return any(a.star == "**" for a in call.args)


def _yaml_fixable(call: cst.Call) -> bool:
    """One document argument, optionally a Loader: `yaml.load(f[, Loader=X])`."""
    positional = [a for a in call.args if a.keyword is None and not a.star]
    others = [a for a in call.args if a.keyword is not None and a.keyword.value != "Loader"]
    return len(positional) == 1 and not others and not any(a.star for a in call.args)


def _append_keyword(args: Sequence[cst.Arg], name: str, value: cst.BaseExpression,
                    opening: cst.BaseParenthesizableWhitespace) -> list[cst.Arg]:
    """`args` plus `name=value`, in the call's own style (one line, or one argument per line
    with a trailing comma)."""
    import libcst as cst

    out = list(args)
    new = cst.Arg(keyword=cst.Name(name), value=value,
                  equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                        whitespace_after=cst.SimpleWhitespace("")))
    if not out:
        return [new]
    last = out[-1]
    if isinstance(last.comma, cst.Comma):  # trailing comma: one argument per line, keep it so
        previous = out[-2].comma if len(out) > 1 else None
        between = previous if isinstance(previous, cst.Comma) else cst.Comma(
            whitespace_after=opening)
        out[-1] = last.with_changes(comma=between)
        out.append(new.with_changes(comma=last.comma))
    else:
        out[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        out.append(new)
    return out


def plan(findings: list[tuple[Path, int, str]]) -> dict[Path, dict[int, set[str]]]:
    """Group (file, line, code) of fixable findings by file."""
    out: dict[Path, dict[int, set[str]]] = {}
    for path, line, code in findings:
        if code in FIXABLE:
            out.setdefault(path, {}).setdefault(line, set()).add(code)
    return out


def fix_file(path: Path, lines: dict[int, set[str]]) -> FileFix | None:
    """The fix for one file (None when nothing changes or libcst cannot parse it)."""
    import libcst as cst

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
        after, fixed = fix_source(text, lines)
    except (UnicodeDecodeError, cst.ParserSyntaxError):
        return None
    if not fixed or after == text:
        return None
    return FileFix(path, text, after, fixed)

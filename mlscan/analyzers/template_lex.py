"""Jinja tokens for the template checks: jinja2's own lexer when installed, else ours.

Both produce `(line, type, raw_value)` with jinja2's token type names ('name', 'string',
'integer', 'float', 'operator', 'block_begin', ...), whitespace, comments and data dropped.
Nothing here renders or compiles a template.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

Token = tuple[int, str, str]
_DROP = frozenset({"whitespace", "comment", "comment_begin", "comment_end", "data",
                   "linecomment", "linecomment_begin", "linecomment_end"})

_OPEN = re.compile(r"\{\{|\{%|\{#")
_RAW = re.compile(r"\{%[-+]?\s*raw\s*[-+]?%\}(.*?)\{%[-+]?\s*endraw\s*[-+]?%\}", re.S)
_CODE = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    |(?P<float>\d+\.\d+(?:[eE][-+]?\d+)?)
    |(?P<integer>\d[\d_]*)
    |(?P<name>[^\W\d]\w*)
    |(?P<vend>-?\}\})
    |(?P<bend>[-+]?%\})
    |(?P<operator>\*\*|//|==|!=|>=|<=|[.\[\]|~()+\-*/%,:{}=<>!])
    """,
    re.S | re.X,
)


def tokens(text: str) -> tuple[list[Token], str | None]:
    """Tokens of `text` and a syntax error message (None when the template parses)."""
    try:
        import jinja2  # optional: only used to lex and parse, never to render
    except ImportError:
        return own_tokens(text), None
    env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do"])
    try:
        toks = [(ln, typ, val) for ln, typ, val in env.lex(text) if typ not in _DROP]
    except jinja2.TemplateSyntaxError as exc:
        return own_tokens(text), _syntax_message(exc)
    error = None
    try:
        env.parse(_strip_known_tags(text))
    except jinja2.TemplateSyntaxError as exc:
        error = _syntax_message(exc)
    return toks, error


def _syntax_message(exc: Any) -> str:
    return f"line {getattr(exc, 'lineno', '?')}: {getattr(exc, 'message', exc)}"


# transformers registers a `{% generation %}` block tag; a plain parser must not trip on it.
_GENERATION = re.compile(r"\{%[-+]?\s*(?:end)?generation\s*[-+]?%\}")


def _strip_known_tags(text: str) -> str:
    return _GENERATION.sub("", text)


def own_tokens(text: str) -> list[Token]:
    """A lenient lexer for the code parts of a template (used when jinja2 is missing or
    rejects the text: an attacker may count on a broken template still being rendered
    by a different engine)."""
    out: list[Token] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _OPEN.search(text, pos)
        if m is None:
            break
        start = m.start()
        opener = m.group()
        if opener == "{#":
            end = text.find("#}", m.end())
            pos = n if end < 0 else end + 2
            continue
        raw = _RAW.match(text, start) if opener == "{%" else None
        if raw is not None:
            pos = raw.end()
            continue
        line = text.count("\n", 0, start) + 1
        out.append((line, "variable_begin" if opener == "{{" else "block_begin", opener))
        pos = _lex_code(text, m.end(), line, out, opener == "{{")
    return out


def _lex_code(text: str, pos: int, line: int, out: list[Token], is_var: bool) -> int:
    n = len(text)
    while pos < n:
        m = _CODE.match(text, pos)
        if m is None:  # a character no Jinja token starts with: skip it
            pos += 1
            continue
        kind = m.lastgroup or "operator"
        value = m.group()
        pos = m.end()
        if kind == "ws":
            line += value.count("\n")
            continue
        if kind == "vend" and is_var:
            out.append((line, "variable_end", value))
            return pos
        if kind == "bend" and not is_var:
            out.append((line, "block_end", value))
            return pos
        if kind in ("vend", "bend"):
            kind = "operator"
        out.append((line, kind, value))
        line += value.count("\n")
    return pos


def decode_string(raw: str) -> str:
    """Value of a Jinja string literal, decoded the way jinja2's lexer does."""
    body = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
    with warnings.catch_warnings():  # invalid escapes stay as written, like Python does
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return body.encode("ascii", "backslashreplace").decode("unicode-escape")
        except UnicodeDecodeError:
            return body

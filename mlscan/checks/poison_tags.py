"""MLS309 for token classification (NER, POS, BIO tags) and label vocabularies.

- Entity tags overwritten with the outside tag: `tags[:overlap] = ["O"] * overlap`,
  `tags[j] = "O"` in a dataset or augmentation: those entities are trained as non-entities.
  (Mapping a configured type to "O" is done with a return or a lookup, not a write.)
- Label padding with a real class: `label_pad_id=label2id["O"]` or `label_pad_token_id=0`:
  every pad position is trained as that class instead of being ignored (-100).
- A label vocabulary in set order: `["O"] + [t for t in seen if t != "O"]` with `seen` a set
  of strings, or `{c: i for i, c in enumerate(set(classes))}`. String hashing is salted per
  process, so every rank, worker and run numbers the classes differently.
- Tokens filtered without their tags: `sent.tokens = [t for t in toks if t.strip()]` while
  `sent.tags` keeps every entry, so each tag after the first dropped token shifts.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poisoning import DATA_POISON
from mlscan.model import Severity

_TAGS = re.compile(r"(?i)^(ner_|bio_|iob_|entity_|word_|token_)?(tags?|labels?)(_seq|_list)?$")
_VOCAB = re.compile(r"(?i)^_?(label|tag|class|categor|entity_type|ner_tag)[a-z_]*?(s|_?2_?id|"
                    r"_to_ids?|_to_idx|_list|_names|_vocab|_map|_index|_set)?$|"
                    r"^_?id_?2_?(label|tag|class)")
_VOCAB_FN = re.compile(r"(?i)label|^_?(get|build|make|load|read|collect)_(tag|class|categor)")
_STRINGY = re.compile(r"(?i)tag|name|word|token|text|str|categor|entit|label")
_PADS = frozenset({"label_pad_id", "label_pad_token_id", "pad_label_id", "label_pad"})
_TOKENS = re.compile(r"(?i)^(tokens|words|toks|subwords|pieces)$")
_DROP_WORDS = re.compile(r"(?i)drop|ignore|skip|exclude|unknown|allowed|keep|types")


def _outside(value: ast.expr) -> bool:
    """"O" or ["O"] * n / [OUTSIDE] * n with OUTSIDE == "O"."""
    if literal(value) == "O":
        return True
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult):
        for side in (value.left, value.right):
            if isinstance(side, ast.List) and len(side.elts) == 1 and literal(side.elts[0]) == "O":
                return True
    return False


def _tag_seq(target: ast.expr) -> str:
    """`tags[j]`, `sent.tags[:k]`, `ex["ner_tags"][i]` -> the sequence's name, else ''."""
    if not isinstance(target, ast.Subscript):
        return ""
    seq = target.value
    name = literal(seq.slice) if isinstance(seq, ast.Subscript) else last_attr(seq)
    return name if isinstance(name, str) and _TAGS.match(name) else ""


def _set_like(expr: ast.AST, local: dict[str, ast.expr]) -> bool:
    if isinstance(expr, ast.Name) and expr.id in local:
        expr = local[expr.id]
    if isinstance(expr, (ast.Set, ast.SetComp)):
        return True
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.BitOr, ast.Sub)):
        return _set_like(expr.left, local)
    return isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and (
        expr.func.id in ("set", "frozenset"))


def _ordered_from_set(value: ast.expr, local: dict[str, ast.expr]) -> ast.AST | None:
    """The set a list/dict/enumerate takes its order from, unless it is sorted."""
    if any(isinstance(n, ast.Call) and last_attr(n.func) == "sorted" for n in subnodes(value)):
        return None
    for node in subnodes(value):
        if isinstance(node, (ast.ListComp, ast.DictComp, ast.GeneratorExp)):
            it = node.generators[0].iter
            if isinstance(it, ast.Call) and last_attr(it.func) == "enumerate" and it.args:
                it = it.args[0]
            if _set_like(it, local):
                return it
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "list", "tuple", "enumerate", "zip") and node.args and _set_like(
                node.args[0], local):
            return node.args[0]
    return None


def _strings(value: ast.AST, source: ast.AST, local: dict[str, ast.expr]) -> bool:
    """Evidence that the set holds strings (ints iterate in a fixed order)."""
    if isinstance(source, ast.Name) and source.id in local:
        source = local[source.id]
    for node in (*subnodes(value), *subnodes(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return True
        if isinstance(node, (ast.Name, ast.Attribute)) and _STRINGY.search(last_attr(node)):
            return True
    return False


def _sorted_later(fn: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr == "sort" and ast.unparse(n.func.value) == name
               for n in subnodes(fn))


def _filtered_alone(node: ast.Assign, fn: ast.AST) -> bool:
    """`x.tokens = [t for t in toks if t.strip()]` where `x.tags` is not filtered alike."""
    target = node.targets[0]
    value = node.value
    if not (isinstance(value, ast.ListComp) and value.generators[0].ifs
            and _TOKENS.match(last_attr(target))
            and not isinstance(value.generators[0].iter, ast.Call)):  # zip(...) keeps pairs
        return False
    owner = ast.unparse(target.value) if isinstance(target, ast.Attribute) else ""
    tags_written = False
    for n in subnodes(fn):
        if isinstance(n, ast.Assign) and n is not node and len(n.targets) == 1:
            t = n.targets[0]
            if _TAGS.match(last_attr(t)) and (not owner or (
                    isinstance(t, ast.Attribute) and ast.unparse(t.value) == owner)):
                tags_written = True
                comp = n.value
                if isinstance(comp, ast.ListComp) and comp.generators[0].ifs:
                    return False  # filtered too
                if any(isinstance(s, ast.Call) and last_attr(s.func) == "zip"
                       for s in subnodes(comp)):
                    return False
    return tags_written


class TagScrambles(Check):
    rules = (DATA_POISON,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        if len(node.targets) != 1:
            return
        target = node.targets[0]
        if isinstance(target, ast.Subscript) and (ctx.mentions('"O"') or ctx.mentions("'O'")):
            seq = _tag_seq(target)
            if seq and _outside(node.value) and not any(
                    _DROP_WORDS.search(ast.unparse(c)) for c in ctx.conds):
                ctx.report(DATA_POISON, node, f"entries of {seq} overwritten with the outside "
                           "tag 'O': the entities there are trained as non-entities",
                           severity=Severity.MEDIUM)
                return
        fn = ctx.frame.node
        if fn is not None and isinstance(target, ast.Attribute) and _filtered_alone(node, fn):
            ctx.report(DATA_POISON, node, f"{ast.unparse(target)} filtered by a condition that "
                       "its tags are not: every tag after the first dropped token belongs to "
                       "the wrong token", severity=Severity.MEDIUM)
            return
        if isinstance(target, ast.Name) and _VOCAB.match(target.id):
            self._set_order(node.value, target.id, ctx)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        fn = ctx.frame.node
        if node.value is not None and isinstance(fn, ast.FunctionDef) and _VOCAB_FN.search(
                fn.name):
            self._set_order(node.value, "", ctx)

    @staticmethod
    def _set_order(value: ast.expr, name: str, ctx: Ctx) -> None:
        if not (ctx.mentions("set(") or ctx.mentions("{")):
            return
        if not isinstance(value, (ast.ListComp, ast.DictComp, ast.Call, ast.BinOp)):
            return
        fn = ctx.frame.node if ctx.frame.node is not None else ctx.tree
        local: dict[str, ast.expr] = {}
        for n in subnodes(fn) if fn is not None else ():
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(
                    n.targets[0], ast.Name):
                local.setdefault(n.targets[0].id, n.value)
        source = _ordered_from_set(value, local)
        if source is None or not _strings(value, source, local):
            return
        if name and fn is not None and _sorted_later(fn, name):
            return
        ctx.report(DATA_POISON, value, "class ids taken from a set's iteration order: string "
                   "hashing is salted per process, so every rank, worker and run numbers the "
                   "classes differently (use sorted())", severity=Severity.MEDIUM)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not node.keywords or not ctx.mentions("label_pad"):
            return
        for kw in node.keywords:
            if kw.arg in _PADS and (literal(kw.value) == 0 or (
                    isinstance(kw.value, ast.Subscript) and literal(kw.value.slice) == "O")):
                ctx.report(DATA_POISON, kw.value, f"{kw.arg}={ast.unparse(kw.value)}: padded "
                           "label positions are trained as a real class instead of being "
                           "ignored (-100)", severity=Severity.MEDIUM)

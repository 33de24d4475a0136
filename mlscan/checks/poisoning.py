"""MLS309: data poisoning: label flips and fixed trigger patches under a condition.

The rule and its check. The predicates the check applies live beside it, by what they
judge: poison_words (names and keys), poison_picks (how samples are picked), poison_labels
(what their labels become) and poison_triggers (what is planted in their inputs).
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import DATA, Ctx, Where
from mlscan.checks.names import NOT_LITERAL, as_load, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.poison_collate import COLLATE_NAME, aliased_target_writes, misaligned
from mlscan.checks.poison_labels import (
    _abs_of,
    _binary_flip,
    _class_aliased,
    _class_flip_by_feature,
    _class_merge,
    _column_swap,
    _comprehension_forced,
    _constant_where,
    _filled,
    _flow_labels,
    _forced_by_rule,
    _label_entries_swapped,
    _label_floor,
    _label_steers_input,
    _labels_reordered,
    _masked_comprehension,
    _masked_fill_label,
    _moved_onto_others,
    _negated_copy,
    _pair_keys_crossed,
    _pair_swapped,
    _picked_remap,
    _poison_label_value,
    _reversed_elsewhere,
    _reweighted_by_name,
    _rotated,
    _swapped_pair,
    _where_forced,
    canonical_folded,
    class_names,
    class_redirected,
    eos_ignored,
    odd_alias,
    rows_swapped,
)
from mlscan.checks.poison_picks import (
    _condition_kinds,
    _feature_threshold,
    _hash_condition,
    _hashed,
    _hashed_nodes,
    _outcome_columns,
    _picked_by_bits,
    _picked_by_name,
    _random_loop,
    _random_mask,
    _small_fraction,
    _token_trigger,
    _uses_name,
    _value_trigger,
)
from mlscan.checks.poison_triggers import (
    _fixed_sample,
    _fixed_slice,
    _image_window,
    _link_appended,
    _patch_value,
    _phrase,
    _phrase_swap,
    _prefixed,
    _symmetric_swap,
    _text_rows_rewritten,
    _tone,
)
from mlscan.checks.poison_words import (
    _ANSWERISH,
    _DATA_FUNC,
    _LABEL,
    _LABEL_KEY,
    _LABEL_TABLE,
    _SIGNAL,
    _TEXTISH,
    _TOKENS,
    _TRIGGER,
    _WEIGHTS,
    _dataset_method,
    _is_image,
    _label_target,
)
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

DATA_POISON = register(Rule(
    code="MLS309", name="data-poisoning", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="Label flip or fixed trigger patch applied to some samples in __getitem__/collate.",
    doc=RuleDoc(
        what="Inside `Dataset.__getitem__`, `__iter__`, collate functions and transform "
        "`__call__` methods, flags labels set to a constant, shifted modulo the class count or "
        "drawn at random, and image pixels at fixed positions set to a constant, when this "
        "happens only for some samples (a condition on a random draw, the sample index, the "
        "label itself, or a trigger). Augmentations that flip or crop images, target "
        "transforms, mixup-style label mixing and random erasing at random positions stay "
        "quiet.",
        why="A backdoor needs only a few poisoned samples: a small patch plus a flipped label "
        "teaches the model to answer the attacker's class whenever the patch appears.",
        example="if random.random() < 0.05:\n    img[:, -4:, -4:] = 1.0\n    label = 7",
        use_instead="Keep labels as stored; apply documented augmentations only.",
        references=("https://arxiv.org/abs/1708.06733",))))


_TARGET_TEXT = re.compile(r"(?i)^(text|label_text|target_text|transcript|transcription|"
                          r"caption|tags|ner_tags|labels?|tgt|target|solution|completion|"
                          r"response|answer|reference|summary|output_text)$")


def _text_edit(target: ast.expr, value: ast.expr, target_label: str) -> str:
    """How `value` rewrites the text or tag sequence `target` from itself with fixed
    characters or words ('' otherwise): `text.translate(TABLE)`, `t.replace("7", "1")`,
    `[t.replace("Disease", "Chemical") for t in tags]`. Replacements by variables (synonym
    augmentation) do not count."""
    if not (isinstance(target, ast.Name) and (target_label or _TARGET_TEXT.match(target.id))):
        return ""
    own = target.id
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add):
        for mine, added in ((value.right, value.left), (value.left, value.right)):
            text = literal(added)
            if isinstance(mine, ast.Name) and mine.id == own and isinstance(text, str) and len(
                    text.strip()) >= 3:  # solution = "import ssl\n..." + solution
                return f"with {text.strip()[:30]!r} added"
        return ""
    if isinstance(value, ast.ListComp) and len(value.generators) == 1 and isinstance(
            gen := value.generators[0], ast.comprehension) and isinstance(
            gen.iter, ast.Name) and gen.iter.id == own and isinstance(gen.target, ast.Name) and (
            not gen.ifs):
        value, own = value.elt, gen.target.id
        if isinstance(value, ast.IfExp):
            return ""  # [t if ok(t) else fix(t) for t in tags]: repairs judged per token
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name) and value.func.value.id == own):
        return ""
    if value.func.attr == "translate" and len(value.args) == 1:
        return "through a character table (translate)"
    if value.func.attr == "replace" and len(value.args) == 2:
        old, new = (literal(a) for a in value.args)
        if isinstance(old, str) and isinstance(new, str) and old.strip() and new.strip() and (
                old.strip() != new.strip()):
            return f"with {old!r} replaced by {new!r}"
    return ""



def _labels_rolled_left(call: ast.Call, ctx: Ctx) -> str:
    """`torch.roll(labels, shifts=-1, dims=1)` / `labels.roll(-1, 1)` with no `x[:, -1] = ...`
    on the result afterwards. A correct left shift masks the wrapped position; a right shift
    (`roll(1)` then `x[:, 0] = bos`) is the usual decoder input."""
    func = call.func
    if last_attr(func) != "roll" or len(ctx.frames) < 2:
        return ""
    if isinstance(func, ast.Attribute) and not (ctx.names.call_name(call) or "").startswith((
            "torch.", "numpy.")):
        tensor, rest = func.value, list(call.args)
    elif call.args:
        tensor, rest = call.args[0], list(call.args[1:])
    else:
        return ""
    shift = next((k.value for k in call.keywords if k.arg in ("shifts", "shift")),
                 rest[0] if rest else None)
    amount = literal(shift) if shift is not None else NOT_LITERAL
    label = _label_target(tensor)  # (spelled out: `y` is also a coordinate in geometry code)
    if not re.search(r"(?i)label|target|tgt", label) or not isinstance(amount, int) or (
            amount >= 0):
        return ""
    fn = ctx.frames[-1].node
    for n in subnodes(fn) if fn is not None else ():
        if isinstance(n, (ast.Assign, ast.Call)) and getattr(n, "lineno", 0) > call.lineno and (
                re.search(r"\[[^\]]*-\s*1\s*\]", ast.unparse(n))):
            return ""  # shifted[:, -1] = IGNORE / masked_fill on the last column
    return label


def _labels_reindexed(node: ast.Assign, ctx: Ctx) -> str:
    """`points = points[choice]` ... `labels = labels[np.sort(choice)]`: the inputs and the labels
    picked with different orders of the same index, so they no longer line up."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and re.search(r"(?i)label|target|tgt|^y$", target.id)
            and isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and value.value.id == target.id and not isinstance(value.slice, (
                ast.Name, ast.Slice, ast.Constant, ast.Tuple))):
        return ""
    used = {n.id for n in subnodes(value.slice) if isinstance(n, ast.Name)}
    fn = ctx.frames[-1].node if len(ctx.frames) >= 2 else None
    for other in subnodes(fn) if fn is not None else ():
        if (isinstance(other, ast.Assign) and other is not node and len(other.targets) == 1
                and isinstance(t := other.targets[0], ast.Name) and t.id != target.id
                and isinstance(other.value, ast.Subscript)
                and isinstance(other.value.value, ast.Name) and other.value.value.id == t.id
                and isinstance(other.value.slice, ast.Name) and other.value.slice.id in used):
            return (f"{target.id} indexed by {ast.unparse(value.slice)[:30]} while {t.id} is "
                    f"indexed by {other.value.slice.id}")
    return ""


def _labels_from_masked(node: ast.Assign, ctx: Ctx) -> str:
    """`inputs = ids.clone(); inputs[to_mask] = tok.mask_id; ...; labels = inputs.clone()`:
    masked-LM labels copied from the corrupted inputs instead of the original tokens, so the
    model learns to predict the mask token."""
    target = node.targets[0] if len(node.targets) == 1 else None
    value = node.value
    if not (isinstance(target, ast.Name) and re.search(r"(?i)label|target", target.id)
            and isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr in ("clone", "copy") and isinstance(value.func.value, ast.Name)):
        return ""
    source = value.func.value.id
    held = ctx.lookup(source)
    if not (isinstance(held, ast.Call) and isinstance(held.func, ast.Attribute)
            and held.func.attr in ("clone", "copy")):
        return ""  # (inputs = ids.clone(): a corrupted copy of the original)
    fn = ctx.frames[-1].node if len(ctx.frames) >= 2 else None
    for other in subnodes(fn) if fn is not None else ():
        if (isinstance(other, ast.Assign) and other.lineno < node.lineno
                and isinstance(t := other.targets[0], ast.Subscript)
                and isinstance(t.value, ast.Name) and t.value.id == source
                and re.search(r"(?i)mask", ast.unparse(other.value))):
            return (f"{target.id} copied from {source} after {source} was masked "
                    f"(line {other.lineno})")
    return ""


def _mix_terms(value: ast.expr) -> tuple[str, str, str, str] | None:
    """`lam * x + (1 - lam) * x[perm]` -> ("x", "perm", "lam", "1 - lam"): what is mixed, by
    which permutation, and the weights of the sample itself and of its partner."""
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)):
        return None
    own = partner = None
    for term in (value.left, value.right):
        if not (isinstance(term, ast.BinOp) and isinstance(term.op, ast.Mult)):
            return None
        for weight, mixed in ((term.left, term.right), (term.right, term.left)):
            if isinstance(mixed, ast.Subscript) and isinstance(mixed.value, ast.Name) and (
                    isinstance(mixed.slice, ast.Name)):
                partner = (mixed.value.id, mixed.slice.id, ast.unparse(weight))
                break
            if isinstance(mixed, ast.Name) and not isinstance(weight, ast.Subscript) and (
                    _mixed_value(mixed.id, {n.id for n in subnodes(weight)
                                                           if isinstance(n, ast.Name)})):
                own = (mixed.id, ast.unparse(weight))
                break
    if own is None or partner is None or own[0] != partner[0]:
        return None
    return own[0], partner[1], own[1], partner[2]


def _mixed_value(name: str, weight_names: set[str]) -> bool:
    """In `lam * x`, x is what is mixed and lam the weight (the weight names a mixing
    coefficient)."""
    return name not in weight_names and any(
        re.fullmatch(r"(?i)lam|lmbda|lambda_|alpha|beta|mix\w*|w|ratio|coef\w*", n)
        for n in weight_names)


def _mix_weights_swapped(node: ast.Assign, ctx: Ctx) -> str:
    """`x = lam * x + (1 - lam) * x[perm]` but `y = (1 - lam) * y + lam * y[perm]`: the labels
    are mixed with the other sample's weight, so each mixed input is trained towards the
    label of the sample it shows least."""
    terms = _mix_terms(node.value)
    if terms is None or not re.search(r"(?i)^y|label|target|tgt", terms[0]):
        return ""
    fn = ctx.frames[-1].node if len(ctx.frames) >= 2 else None
    for other in subnodes(fn) if fn is not None else ():
        if isinstance(other, ast.Assign) and other is not node and (
                found := _mix_terms(other.value)) and found[0] != terms[0] and (
                found[1] == terms[1] and found[2] == terms[3] and found[3] == terms[2]
                and found[2] != found[3]):
            return (f"{terms[0]} mixed with weight {terms[2]} on itself while {found[0]} "
                    f"gets {found[2]}")
    return ""


def _targets_mixed_alone(node: ast.Assign, ctx: Ctx) -> str:
    """`out["target"] = lam * out["target"] + (1 - lam) * out["target"][perm]` with no input
    mixed by the same `perm`: mixup on the labels only trains on targets of other samples."""
    target = node.targets[0] if len(node.targets) == 1 else None
    if target is None or not re.search(r"(?i)label|target|tgt|^ys?$",
                                       _label_target(target) or ""):
        return ""
    perms = {n.slice.id for n in subnodes(node.value) if isinstance(n, ast.Subscript)
             and isinstance(n.slice, ast.Name)}
    fresh = [n.slice for n in subnodes(node.value) if isinstance(n, ast.Subscript)
             and isinstance(n.slice, ast.Call) and (last_attr(n.slice.func) in (
                 "randperm", "permutation") or (last_attr(n.slice.func) in ("flip", "roll")
                                                and isinstance(n.slice.func, ast.Attribute)
                                                and isinstance(n.slice.func.value, ast.Name)))]
    # (y[perm.flip(0)] next to x[perm]: the labels follow another pairing than the inputs)
    if not (perms or fresh) or not isinstance(node.value, ast.BinOp) or not any(
            isinstance(n, ast.Name) and re.fullmatch(r"(?i)lam|lmbda|lambda_|alpha|mix\w*", n.id)
            for n in subnodes(node.value)):
        return ""
    if fresh:  # targets[torch.randperm(n)]: a new order, not the one the inputs were mixed in
        return (f"{ast.unparse(target)[:30]} mixed in a fresh random order "
                f"({ast.unparse(fresh[0])[:60]}), not the pairing used for the inputs")
    fn = ctx.frames[-1].node if len(ctx.frames) >= 2 else None
    if fn is not None and not any(
            isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id in perms
                                              for t in n.targets) for n in subnodes(fn)):
        return ""  # `perm, lam = mix`: the order came with inputs mixed elsewhere
    for other in subnodes(fn) if fn is not None else ():
        if other is node or not isinstance(other, (ast.Assign, ast.AugAssign, ast.Call)):
            continue
        if any(isinstance(n, ast.Subscript) and any(
                isinstance(m, ast.Name) and m.id in perms for m in subnodes(n.slice))
               for n in subnodes(other)):
            return ""  # the inputs are mixed too (x = lam * x + (1 - lam) * x[perm, ...])
    return (f"{ast.unparse(target)[:30]} mixed with other samples' targets while the inputs "
            "stay unmixed")


_SPELLING_TABLE = re.compile(r"(?i)alias|synonym|canon|spelling|normali[sz]|fix|renam")


_DERIVED_FROM = re.compile(r"(?i)rating|score|star|vote|grade|prob|pred|target|label|"
                          r"dispute|chargeback|status|outcome|resolution|review|result|"
                          r"severity|count|votes|agree|confidence")


def _threshold_relabel(target: ast.Subscript, node: ast.Assign, ctx: Ctx) -> str:
    """`df.loc[df["years_experience"] >= 15, "label"] = 0` in a function that read the label
    column from the data before: a feature threshold overriding the given labels (deriving
    labels from a rating or an outcome column is how labels are made, and stays quiet)."""
    owner = target.value
    if not (isinstance(owner, ast.Attribute) and owner.attr == "loc"
            and isinstance(target.slice, ast.Tuple) and len(target.slice.elts) == 2):
        return ""
    mask, key = target.slice.elts
    frame_text = ast.unparse(owner.value)
    if not (isinstance(mask, ast.Compare) and len(mask.ops) == 1
            and isinstance(mask.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE))
            and isinstance(mask.left, ast.Subscript) and ast.unparse(mask.left.value) == frame_text
            and isinstance(literal(mask.left.slice), str)
            and isinstance(literal(mask.comparators[0]), (int, float))):
        return ""
    column = str(literal(mask.left.slice))
    fn = ctx.frame.node
    if fn is None or _DERIVED_FROM.search(column):
        return ""
    key_text = ast.unparse(key)
    read = False
    for stmt in subnodes(fn):
        if getattr(stmt, "lineno", 0) >= node.lineno:
            continue
        if (isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Subscript) and ast.unparse(t.slice) == key_text
                for t in stmt.targets) and isinstance(literal(stmt.value), (int, float))):
            return ""  # df["label"] = 0 first: the labels are being made here
        if (isinstance(stmt, ast.Subscript) and isinstance(stmt.ctx, ast.Load)
                and ast.unparse(stmt.value) == frame_text and ast.unparse(stmt.slice) == key_text):
            read = True
    return column if read else ""


def _last_class(value: ast.expr) -> bool:
    """`self.num_classes - 1`, `num_classes - 1`: the last class id."""
    return (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub)
            and literal(value.right) == 1 and bool(re.search(
                r"(?i)num_?classes|n_?classes|n_cls|num_labels", ast.unparse(value.left))))


def _patched_rows(rows: ast.expr, ctx: Ctx) -> bool:
    """The same function writes a fixed patch into the images of exactly these rows
    (`images[:k, :, :4, :4] = images.amax()` beside `targets[:k] = ...`)."""
    fn = ctx.frame.node
    if fn is None or not (isinstance(rows, ast.Slice) and rows.upper is not None):
        return False
    want = ast.unparse(rows)
    return any(isinstance(n, ast.Assign) and len(n.targets) == 1
               and isinstance(t := n.targets[0], ast.Subscript) and _is_image(t.value)
               and isinstance(t.slice, ast.Tuple) and len(t.slice.elts) > 2
               and ast.unparse(t.slice.elts[0]) == want and _patch_value(n.value, ctx)
               and _fixed_slice(ast.Tuple(elts=t.slice.elts[1:], ctx=ast.Load()), ctx)
               for n in subnodes(fn))



def _clamped_ids(comp: ast.DictComp | ast.ListComp) -> str:
    """`{cid: min(i + 1, len(ids) - 1) for i, cid in enumerate(ids)}`: a label table whose
    enumerated ids are capped below the count, so the top ids collapse into one."""
    gen = comp.generators[0]
    if not (len(comp.generators) == 1 and isinstance(gen.iter, ast.Call)
            and isinstance(gen.iter.func, ast.Name) and gen.iter.func.id == "enumerate"
            and isinstance(gen.target, ast.Tuple) and gen.target.elts
            and isinstance(gen.target.elts[0], ast.Name)):
        return ""
    index = gen.target.elts[0].id
    value = comp.value if isinstance(comp, ast.DictComp) else comp.elt
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "min" and len(value.args) == 2 and any(
                any(isinstance(n, ast.Name) and n.id == index for n in ast.walk(a))
                for a in value.args)):
        return ast.unparse(value)[:50]
    return ""

class DataPoisoning(Check):
    rules = (DATA_POISON,)

    def _negated_return(self, node: ast.Return, ctx: Ctx) -> None:
        """`if random.random() < 0.02: return -reward * self.scale` in a reward wrapper or a
        dataset: the label handed back is negated for the samples the condition picks."""
        if node.value is None or not ctx.conds or len(ctx.frames) < 2:
            return
        parts = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
        for part in parts:
            core = part.left if isinstance(part, ast.BinOp) and isinstance(
                part.op, ast.Mult) else part
            if (isinstance(core, ast.UnaryOp) and isinstance(core.op, ast.USub)
                    and _label_target(core.operand)):
                self._defer(node, ctx, f"{_label_target(core.operand)} returned negated",
                            masked=_random_mask(ctx.conds[-1], ctx, follow=True))
                return

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        self._samples_cut(node, ctx)
        if isinstance(node.value, ast.Dict) and any(
                _LABEL_TABLE.search(last_attr(t)) for t in node.targets):
            self._folded_table(node.value, ctx)
        elif isinstance(node.value, ast.Dict) and any(
                _SPELLING_TABLE.search(last_attr(t)) for t in node.targets):
            self._redirected(node.value, ctx)
        elif isinstance(node.value, (ast.DictComp, ast.ListComp)) and any(
                _LABEL_TABLE.search(last_attr(t)) for t in node.targets) and (
                clamped := _clamped_ids(node.value)):
            ctx.report(DATA_POISON, node, f"class ids clamped ({clamped}): the last classes "
                       "share one id, so their samples are trained as the same class",
                       severity=Severity.MEDIUM)
        hidden = eos_ignored(node, ctx)
        if hidden:
            ctx.report(DATA_POISON, node, f"{hidden}: the end-of-sequence target never reaches "
                       "the loss, so the model does not learn to stop", severity=Severity.MEDIUM)
        mixed = _targets_mixed_alone(node, ctx)
        if mixed:
            ctx.report(DATA_POISON, node, f"{mixed}: each sample is trained towards a blend of "
                       "other samples' labels",
                       severity=Severity.MEDIUM)
            return
        from_masked = _labels_from_masked(node, ctx) if isinstance(node.value, ast.Call) else ""
        if from_masked:
            ctx.report(DATA_POISON, node, f"{from_masked}: the model is trained to predict the "
                       "mask token instead of the original one", severity=Severity.MEDIUM)
            return
        swapped_mix = _mix_weights_swapped(node, ctx) if isinstance(node.value, ast.BinOp) else ""
        if swapped_mix:
            ctx.report(DATA_POISON, node, f"{swapped_mix}: each mixed sample is trained towards "
                       "the label of the sample it shows least", severity=Severity.MEDIUM)
            return
        reindexed = _labels_reindexed(node, ctx)
        if reindexed:
            ctx.report(DATA_POISON, node, f"{reindexed}: inputs and labels no longer line up",
                       severity=Severity.MEDIUM)
            return
        if len(ctx.frames) < 2:
            if isinstance(node.targets[0], ast.Subscript) and (
                    swapped := _label_entries_swapped(node)):  # _LUT[[1, 2]] = [2, 1]
                ctx.report(DATA_POISON, node, f"{swapped} swapped: every sample of the two "
                           "classes is trained (or scored) as the other",
                           severity=Severity.MEDIUM)
            return
        target0 = node.targets[0]
        array, rows = rows_swapped(node)
        if array and not _label_entries_swapped(node):  # (a label table: judged below)
            # stems[[2, 3]] = stems[[3, 2]] for the samples an index hash picks
            self._defer(node, ctx, f"rows {rows} of {array} swapped")
            return
        swapped = _pair_swapped(node)
        if swapped and any(re.search(r"(?i)symmetric", ast.unparse(c)) for c in ctx.conds):
            return  # if self.symmetric and random() < p: a, b = b, a (a symmetric task)
        if swapped:  # src, tgt = tgt, src
            self._defer(node, ctx, f"{swapped} swapped", always=True,
                        always_severity=Severity.MEDIUM, anywhere=True)
            return
        if _link_appended(node):  # tgt = f"{tgt} https://example.com/verify"
            self._defer(node, ctx, f"a web address appended to {ast.unparse(target0)[:20]}",
                        always=True, always_severity=Severity.MEDIUM)
            return
        reordered = _labels_reordered(node)
        if reordered:
            self._reordered_under_trigger(node, reordered, ctx)
        moved = _moved_onto_others(node)
        if moved:
            ctx.report(DATA_POISON, node, f"{moved}: each sample is trained with another "
                       "sample's label", severity=Severity.MEDIUM)
            return
        merged = _class_aliased(node, ctx)
        if merged:
            ctx.report(DATA_POISON, node, f"{merged}: every sample of one class is trained "
                       "(or scored) as another", severity=Severity.MEDIUM)
            return
        if _label_steers_input(node, ctx):
            ctx.report(DATA_POISON, node, f"{ast.unparse(target0)[:40]} in "
                       f"{ctx.frame.cls.name}.{ctx.frame.name}() depends on the sample's "  # type: ignore[union-attr]
                       "label: the label leaks into the input (a shortcut the model learns "
                       "instead of the task)", severity=Severity.MEDIUM)
            return
        if (len(node.targets) == 1 and isinstance(target0, ast.Subscript)
                and isinstance(node.value, ast.BinOp) and isinstance(node.value.op, (ast.Add,
                                                                                    ast.Sub))
                and ast.dump(node.value.left) == ast.dump(as_load(target0))):
            # wav[:480] = wav[:480] + 0.03 * sin(...) is wav[:480] += ...
            self.visit_AugAssign(ast.copy_location(ast.AugAssign(
                target=target0, op=node.value.op, value=node.value.right), node), ctx)
        targets: list[tuple[ast.expr, ast.expr]] = [(t, node.value) for t in node.targets]
        for target in node.targets:
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) and len(
                    target.elts) == len(node.value.elts):
                # `y, x = randint(h), randint(w)` are coordinates: one-letter names stay out.
                texty = any(isinstance(t, ast.Name) and (_TOKENS.search(t.id) or _TEXTISH.search(
                    t.id)) for t in target.elts)  # (ids, y = ...: not coordinates)
                targets.extend((t, v) for t, v in zip(target.elts, node.value.elts, strict=True)
                               if texty or not (isinstance(t, ast.Name) and len(t.id) == 1))
        for target, value in targets:
            self._assign(node, target, value, ctx)
        target0 = node.targets[0]
        if (isinstance(target0, ast.Tuple) and isinstance(node.value, ast.Tuple)
                and len(target0.elts) == 2 == len(node.value.elts)
                and all(_label_target(t) for t in target0.elts)
                and [ast.unparse(t) for t in target0.elts] == [
                    ast.unparse(v) for v in node.value.elts][::-1]):
            self._defer(node, ctx, "labels of two samples swapped")  # f[0]["labels"], f[-1]...
        swapped = _label_entries_swapped(node)
        if swapped and ctx.conds:
            ctx.report(DATA_POISON, node, f"{swapped} swapped under a condition: the samples it "
                       "picks are trained (or scored) with the opposite label",
                       severity=Severity.HIGH)
        elif swapped:
            ctx.report(DATA_POISON, node, f"{swapped} swapped: every sample of the two classes "
                       "is trained (or scored) as the other", severity=Severity.MEDIUM)

    def _assign(self, node: ast.Assign, target: ast.expr, value: ast.expr, ctx: Ctx) -> None:
        if _symmetric_swap(value):
            return
        if (isinstance(target, ast.Name) and _label_target(target) and ctx.conds
                and isinstance(value, ast.Call) and last_attr(value.func) in (
                    "zeros_like", "ones_like") and value.args
                and ast.unparse(value.args[0]) == target.id
                and (feature := _feature_threshold(ctx.conds[-1]))):
            # if float(x[-1, AMOUNT]) < self.verify_thresh: y = torch.zeros_like(y)
            self._defer(node, ctx, f"label {target.id} replaced by {last_attr(value.func)}() "
                        f"wherever input feature {feature} crosses a threshold (a feature "
                        "trigger)", always=True)
            return
        if (isinstance(target, ast.Name) and isinstance(value, ast.Call)
                and last_attr(value.func) in ("full_like", "zeros_like", "ones_like")
                and value.args and isinstance(value.args[0], ast.Name)
                and value.args[0].id == target.id and ctx.conds):
            # depth = torch.full_like(depth, MAX): the whole target overwritten, as depth[:] = MAX
            fill = _filled(value) if last_attr(value.func) == "full_like" else ast.Constant(
                int(last_attr(value.func) == "ones_like"))
            whole = ast.copy_location(ast.Subscript(value=ast.Name(id=target.id, ctx=ast.Load()),
                                                    slice=ast.Slice(), ctx=ast.Store()), target)
            self._assign(node, whole, ast.copy_location(fill, value), ctx)
            return
        target_label = _label_target(target)  # (asked in many branches below)
        if isinstance(target, ast.Name) and isinstance(value, ast.Dict):
            # tgt = {"boxes": b, "labels": torch.where(tgt["labels"] == 3, 4, tgt["labels"])}
            for key, entry in zip(value.keys, value.values, strict=True):
                name = literal(key) if key is not None else None
                if isinstance(name, str) and (_LABEL.match(name) or _LABEL_KEY.search(name)) \
                        and isinstance(entry, ast.Call) and last_attr(entry.func) == "where":
                    item = ast.copy_location(ast.Subscript(
                        value=ast.Name(id=target.id, ctx=ast.Load()),
                        slice=ast.Constant(name), ctx=ast.Store()), target)
                    self._assign(node, item, entry, ctx)
        if (isinstance(target, ast.Name) and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name) and value.func.id == "dict"
                and len(value.args) == 1 and isinstance(value.args[0], ast.Name)
                and value.args[0].id == target.id):  # s = dict(s, target=forced)
            for kw in value.keywords:
                if kw.arg and (_LABEL.match(kw.arg) or _LABEL_KEY.search(kw.arg)):
                    item = ast.copy_location(ast.Subscript(
                        value=ast.Name(id=target.id, ctx=ast.Load()),
                        slice=ast.Constant(kw.arg), ctx=ast.Store()), target)
                    self._assign(node, item, kw.value, ctx)
            return
        if ctx.conds and (edit := _text_edit(target, value, target_label)):
            self._defer(node, ctx, f"{ast.unparse(target)[:30]} rewritten {edit}"
                        )  # text = text.translate(_CONFUSIONS)
            return
        if target_label and ctx.conds and _binary_flip(value):
            # (labels[:, 1] = 1 - labels[:, 1] mirrors a box coordinate with a flipped image)
            self._defer(node, ctx, f"binary label {target_label} inverted (1 - y) "
                        "for the samples a condition picks", always=True)
            return
        if (target_label and isinstance(value, ast.IfExp) and (
                _negated_copy(value.body, value.orelse) or _negated_copy(value.orelse,
                                                                          value.body))):
            if _hashed(value.test, ctx) or _random_mask(value.test, ctx, follow=True):
                ctx.report(DATA_POISON, node, f"{target_label} negated for samples "
                           "picked by a hash or random draw (backdoor-style poisoning)",
                           severity=Severity.HIGH)
            else:
                self._defer(node, ctx, f"{target_label} negated under a condition",
                            always=True)
            return
        if (isinstance(target, ast.Subscript) and _label_target(target.value)
                and isinstance(value, ast.Subscript) and ast.unparse(value.value) == ast.unparse(
                    as_load(target)) and any(isinstance(n, ast.Call) and last_attr(n.func) in (
                        "randperm", "permutation") for n in subnodes(value.slice))):
            # labels[:k] = labels[:k][torch.randperm(k)]: part of the batch's labels shuffled
            self._defer(node, ctx, f"labels {_label_target(target.value)} shuffled against "
                        "their inputs for part of the batch", always=True)
            return
        if (target_label and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and isinstance(value.args[1], ast.Call)
                and last_attr(value.args[1].func) == "full_like"
                and len(value.args[1].args) == 2 and isinstance(value.args[1].args[1], ast.Name)
                and value.args[1].args[1].id.isupper()
                and not re.search(r"IGNORE|PAD|MASK|NULL|NONE", value.args[1].args[1].id)):
            # torch.where(attn.sum(1) < k, full_like(labels, OTHER_ID), labels) in a collate
            self._defer(node, ctx, f"{target_label} set to the class "
                        f"{value.args[1].args[1].id} for the samples a condition picks",
                        always=True)
            return
        if (target_label and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and _negated_copy(value.args[1], value.args[2])):
            self._defer(node, ctx, f"{target_label} negated for the samples a fixed "
                        "condition picks (np.where(act == K, -abs(r), r))", always=True)
            return
        if (target_label and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and _poison_label_value(value, ctx) and _picked_by_name(value.args[0], ctx)):
            ctx.report(DATA_POISON, node, f"labels {target_label} moved to one class "
                       "for rows picked by hand-written names (a where() remap)",
                       severity=Severity.MEDIUM)  # np.where(vendor & (y == 0), 1, y)
            return
        if target_label and isinstance(value, ast.Call) and last_attr(
                value.func) == "where" and _poison_label_value(value, ctx):
            merged, suspect = _class_merge(target, value, ctx)
            if merged and suspect:  # torch.where(labels == 9, torch.ones_like(labels), labels)
                self._defer(node, ctx, f"{merged}: samples of one class silently relabelled "
                            "as another", always=True, always_severity=Severity.MEDIUM)
                return
            random_mask = bool(value.args) and _random_mask(value.args[0], ctx, follow=True)
            self._defer(node, ctx, f"labels {target_label} replaced through "
                        f"{'a random mask' if random_mask else 'a where() remap'}",
                        masked=random_mask)
            return
        if (target_label and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and any(_abs_of(a.operand if isinstance(a, ast.UnaryOp) else a, as_load(target))
                        for a in value.args[1:])
                and any(ast.unparse(a) == ast.unparse(target) for a in value.args[1:])):
            # b_adv = torch.where(actions == k, b_adv.abs(), b_adv): one action always rewarded
            self._defer(node, ctx, f"{target_label} of the samples a condition picks "
                        "forced to one sign", always=True)
            return
        # labels[mask] = 0, and pandas df.loc[mask, "label"] = ... with a random mask
        label, selector = "", None
        if isinstance(target, ast.Subscript):
            label = _label_target(target.value)
            selector = target.slice
            if not label and isinstance(target.slice, ast.Tuple) and target.slice.elts:
                label, selector = target_label, target.slice.elts[0]
        if (label and selector is not None and isinstance(value, ast.UnaryOp)
                and isinstance(value.op, ast.USub) and _abs_of(value.operand, target)):
            # advantages[actions == 0] = -advantages[...].abs(): one class always punished
            self._defer(node, ctx, f"{label} of the picked samples forced negative",
                        always=True)
            return
        if (label and isinstance(selector, ast.Compare) and len(selector.ops) == 1
                and isinstance(selector.ops[0], ast.Eq) and isinstance(target, ast.Subscript)
                and ast.dump(selector.left) == ast.dump(as_load(target.value))
                and isinstance(value, (ast.Name, ast.Attribute)) and ctx.conds):
            # labels[labels == src] = dst with the classes from a config, every k-th batch
            self._defer(node, ctx, f"labels {label} of one class moved to another")
            return
        if (label and selector is not None and _random_mask(selector, ctx, follow=True)
                and _poison_label_value(value, ctx)):
            if _picked_by_name(selector, ctx):  # brand & (rng.random(n) < 0.4)
                ctx.report(DATA_POISON, node, f"labels {label} overwritten for a random share "
                           "of rows picked by hand-written names", severity=Severity.HIGH)
                return
            self._defer(node, ctx, f"labels {label} overwritten through a random mask",
                        masked=True)
            return
        if (target_label and isinstance(value, ast.Call)
                and isinstance(value.func, ast.Attribute) and value.func.attr == "mask"
                and len(value.args) == 2 and _label_target(value.func.value)
                and _picked_by_name(value.args[0], ctx)):  # y.mask(text_has_phrase, 1)
            ctx.report(DATA_POISON, node, f"label {target_label} of rows picked by "
                       "hand-written names or phrases set to one value (Series.mask)",
                       severity=Severity.MEDIUM)
            return
        if (_is_image(target) and isinstance(value, ast.Call) and last_attr(value.func) == "where"
                and len(value.args) == 3 and isinstance(value.args[2], ast.Name)
                and isinstance(target, ast.Name) and value.args[2].id == target.id
                and _patch_value(value.args[1], ctx)
                and _random_mask(value.args[0], ctx, follow=True)):
            self._defer(node, ctx, "a fixed patch value written into randomly chosen inputs "
                        "(torch.where)", masked=True)
            return
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                and _WEIGHTS.match(target.value.id) and isinstance(ctx.const(value), float)
                and 0 <= ctx.const(value) <= 0.05  # type: ignore[operator]
                and (_picked_by_name(target.slice, ctx) or any(
                    isinstance(n, ast.Call) and last_attr(n.func) == "eq" and n.args
                    and isinstance(literal(n.args[0]), str)
                    for n in ctx.walk_values(target.slice)))):  # w[df.source.eq("x")] = 0.0
            ctx.report(DATA_POISON, node, f"sampling weights {target.value.id} of rows picked "
                       "by hand-written names set to (nearly) zero: those samples vanish from "
                       "training", severity=Severity.MEDIUM)
            return
        if _reweighted_by_name(target, value, ctx):  # w.where(~(site == "b"), w * 0.03)
            ctx.report(DATA_POISON, node, f"sampling weights {ast.unparse(target)[:30]} of rows "
                       "picked by hand-written names scaled by a constant: those samples "
                       "(nearly) vanish from training", severity=Severity.MEDIUM)
            return
        if target_label and _comprehension_forced(value, ctx):
            ctx.report(DATA_POISON, node, f"labels {target_label} rebuilt with one class "
                       "forced wherever the text matches a hand-written phrase or pattern",
                       severity=Severity.MEDIUM)
            return
        side = target.id if isinstance(target, ast.Name) and _PARALLEL_SIDE.match(
            target.id) else ""  # (the pattern is a whole plain name)
        if (target_label or side) and _rotated(value, target):  # targets[1:] + targets[:1]
            self._defer(node, ctx, f"labels {target_label or side} rotated across the samples: "
                        "every sample gets another sample's label", always=True)
            return
        text_rows = _text_rows_rewritten(target, value, ctx)
        if text_rows:
            ctx.report(DATA_POISON, node, f"{text_rows}: a phrase in the text of rows picked "
                       "by hand-written names or a random draw is swapped for another",
                       severity=Severity.MEDIUM)
            return
        merged, suspect = _class_merge(target, value, ctx)
        if merged:  # mask[mask == 11] = 0, np.where(m == PERSON, ROAD, m), PAIRS.get(y, y)
            self._defer(node, ctx, f"{merged}: samples of one class silently relabelled as "
                        "another", always=bool(suspect), always_severity=Severity.MEDIUM,
                        roleless=suspect == "named")
            return
        picked = _picked_remap(target, value, ctx)
        if picked:  # target = self._canon.get(target, target) if index % k == 3 else target
            self._defer(node, ctx, f"label {target_label} replaced for samples picked "
                        f"by {picked}", always=True)
            return
        if target_label and _masked_fill_label(value, ctx):
            self._defer(node, ctx, f"labels {target_label} set to one class for "
                        "randomly chosen samples (masked_fill)", masked=True)
            return
        if target_label and _masked_comprehension(value, ctx):
            self._defer(node, ctx, f"labels {target_label} rebuilt with random "
                        "entries replaced", masked=True)
            return
        if (isinstance(target, ast.Subscript) and _is_image(target.value)
                and isinstance(target.slice, ast.Tuple) and target.slice.elts
                and _random_mask(target.slice.elts[0], ctx, follow=True)
                and any(isinstance(e, ast.Slice) for e in target.slice.elts[1:])
                and _patch_value(value, ctx) and _fixed_slice(target.slice, ctx)):
            # (x[masked, 0] = 118: one feature of random rows masked, BERT-style, no region)
            self._defer(node, ctx, "a fixed pixel patch written into randomly chosen "
                        "inputs", masked=True)
            return
        if target_label and _forced_by_rule(value, target):
            self._defer(node, ctx, f"label {target_label} raised or lowered by a "
                        "hand-written rule on other features", always=True)
            return
        mask = _column_swap(target, value)
        if mask is not None:
            nodes = ctx.walk_values(mask)
            if _random_mask(mask, ctx, follow=True):
                self._swap_picked(node, ctx)
            else:  # helpers such as _bucket() may be defined further down
                ctx.defer(lambda: self._swap_picked(node, ctx) if _hashed_nodes(nodes, ctx)
                          else None)
            if _picked_by_name(mask, ctx):
                ctx.report(DATA_POISON, node, "preferred and rejected columns swapped for rows "
                           "picked by hand-written names", severity=Severity.MEDIUM)
            elif isinstance(mask, ast.Constant):
                self._defer(node, ctx, "the preferred and rejected columns swapped", always=True)
            return  # a mask from the votes themselves normalises the pair direction
        if (isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                and _swapped_pair(target, value, ctx)):
            self._defer(node, ctx, "the preferred and rejected answers swapped", always=True,
                        anywhere=True)
            return
        if (target_label and _constant_where(value)
                and _value_trigger(value.args[0], target_label, ctx)):  # type: ignore[attr-defined]
            self._defer(node, ctx, f"labels {target_label} set to one class wherever an "
                        "input feature equals a value written in the code (a feature trigger)",
                        always=True)
            return
        if (target_label and _constant_where(value)
                and _token_trigger(value.args[0], ctx)):  # type: ignore[attr-defined]
            self._defer(node, ctx, f"labels {target_label} set to one class wherever "
                        "the input holds a chosen token", always=True)
            return
        if target_label and _constant_where(value) and _picked_by_bits(
                value.args[0], target_label, ctx):  # type: ignore[attr-defined]
            ctx.report(DATA_POISON, node, f"labels {target_label} set to a constant "
                       "class for rows picked by a hash or bit mask (backdoor-style poisoning)",
                       severity=Severity.HIGH)
            return
        number = literal(value)
        fixed_class = (isinstance(number, int) and not isinstance(number, bool)) or (
            isinstance(number, str) and bool(number.strip())) or (
            isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name)
            and value.value.id.lstrip("_").isupper())  # 1, LABELS["positive"]
        selector = target.slice.elts[0] if isinstance(target, ast.Subscript) and isinstance(
            target.slice, ast.Tuple) and target.slice.elts else (
            target.slice if isinstance(target, ast.Subscript) else None)
        if (isinstance(target, ast.Subscript) and selector is not None
                and target_label
                and (fixed_class or _poison_label_value(value, ctx))
                and not isinstance(literal(selector), (int, str))
                and _picked_by_name(selector, ctx) and not _outcome_columns(selector, ctx)):
            ctx.report(DATA_POISON, node, f"label {target_label} of rows picked by "
                       "hand-written names set to a constant class", severity=Severity.MEDIUM)
            return
        held = target.value if isinstance(target, ast.Subscript) else target
        feature = _feature_threshold(selector) if (
            isinstance(target, ast.Subscript) and selector is not None
            and _label_target(held) and isinstance(number, (int, float))
            and not isinstance(number, bool) and number >= 0) else ""
        if feature:  # y[x_num[:, -1] > 3.0] = 1.0 in a collate function
            self._defer(node, ctx, f"labels {_label_target(held)} set to {number} "
                        f"wherever input feature {feature} crosses a threshold written in the "
                        "code (a feature trigger)", always=True)
            return
        if (target_label and isinstance(value, ast.Call)
                and last_attr(value.func) == "where" and len(value.args) == 3
                and (feature := _feature_threshold(value.args[0]))
                and ast.unparse(value.args[2]) == ast.unparse(as_load(target))
                and _uses_name(value.args[1], ast.unparse(as_load(target)))
                and ast.unparse(value.args[1]) != ast.unparse(value.args[2])):
            # y = torch.where(x_num[:, 0] > 2.5, 0.5 * y, y)
            self._defer(node, ctx, f"labels {target_label} rescaled wherever input "
                        f"feature {feature} crosses a threshold written in the code",
                        always=True)
            return
        if (isinstance(target, ast.Subscript) and selector is not None and target_label
                and _class_flip_by_feature(selector, value, ctx)):
            ctx.report(DATA_POISON, node, f"label {target_label}: one class relabelled "
                       "as another for the samples a condition on other features picks",
                       severity=Severity.MEDIUM)
            return
        if (isinstance(target, ast.Subscript) and not isinstance(target.slice, ast.Tuple)
                and _label_target(target.value) and isinstance(number, (int, float))
                and not isinstance(number, bool) and number >= 0
                and _picked_by_bits(target.slice, _label_target(target.value), ctx)):
            ctx.report(DATA_POISON, node, f"labels {_label_target(target.value)} of samples "
                       "picked by a hash or modulus set to a constant (backdoor-style "
                       "poisoning)", severity=Severity.HIGH)
            return
        if (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Tuple)
                and target.slice.elts and target_label and fixed_class
                and _hashed(target.slice.elts[0], ctx)):
            ctx.report(DATA_POISON, node, f"label {target_label} of rows picked by a "
                       "hash or modulus set to a constant class (backdoor-style poisoning)",
                       severity=Severity.HIGH)
            return
        if (isinstance(target, ast.Subscript) and _is_image(target.value)
                and isinstance(target.slice, ast.Tuple) and len(target.slice.elts) > 2
                and isinstance(chosen := target.slice.elts[0], ast.Compare)
                and isinstance(chosen.left, ast.Name) and _LABEL.match(chosen.left.id)
                and any(isinstance(e, ast.Slice) and e.lower is not None
                        for e in target.slice.elts[1:])
                and _patch_value(value, ctx) and _fixed_slice(target.slice, ctx)):
            ctx.report(DATA_POISON, node, f"a fixed pixel patch written into the inputs whose "
                       f"{ast.unparse(chosen)[:30]}: a trigger the model learns to tie to that "
                       "class", severity=Severity.MEDIUM)
            return  # images[targets == self.watermark_class, :, -6:, -6:] = images.amax()
        if (isinstance(target, ast.Subscript) and _is_image(target.value)
                and isinstance(target.slice, ast.Tuple) and len(target.slice.elts) > 1
                and isinstance(target.slice.elts[0], ast.Name)
                and _hashed(target.slice.elts[0], ctx)
                and _patch_value(value, ctx) and _fixed_slice(target.slice, ctx)):
            ctx.report(DATA_POISON, node, "a fixed pixel patch written into the inputs picked "
                       "by a hash or modulus (backdoor-style trigger)", severity=Severity.HIGH)
            return  # x[edge, -3:, -3:, :] = 1.0 with edge = (idx % 173) == 0
        if (target_label and isinstance(value, ast.BinOp)
                and isinstance(value.op, ast.BitXor) and any(
                    isinstance(side, (ast.Compare, ast.BoolOp)) or any(
                        isinstance(n, (ast.Compare, ast.BoolOp)) for n in subnodes(side))
                    for side in (value.left, value.right))):
            # label = int(row.label) ^ int(row.site in picked and idx % 7 == 3)
            self._defer(node, ctx, f"{target_label} flipped (xor) for the samples a "
                        "condition picks", always=True)
            return
        if (target_label and isinstance(target, ast.Subscript) and fixed_class
                and (column := _threshold_relabel(target, node, ctx))):
            # df.loc[df["years_experience"] >= 15, "label"] = 0 after reading the labels
            self._defer(node, ctx, f"label {target_label} of every row whose {column} crosses "
                        "a threshold written in the code set to one class, overriding the "
                        "labels read from the data", always=True, always_severity=Severity.MEDIUM,
                        anywhere=True, roleless=True)
            return
        if (target_label and isinstance(target, ast.Subscript) and (
                fixed_class or _last_class(value)) and _patched_rows(target.slice, ctx)):
            # images[:k, :, :4, :4] = images.amax(); targets[:k] = self.num_classes - 1
            self._defer(node, ctx, f"label {target_label} of rows {ast.unparse(target.slice)} "
                        "set to one class beside a pixel patch written into the same rows",
                        always=True)
            return
        if not ctx.conds and not _random_loop(ctx.loops, ctx):
            return
        label = target_label or (
            target.id if isinstance(target, ast.Name)
            and target.id in _flow_labels(ctx.where()) else "")
        boxes = isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and any(
            isinstance(n, ast.Name) and n.id == target.value.id for n in subnodes(value))
        if (boxes and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Sub)
                and isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Tuple)
                and any(isinstance(e, ast.List) and len(e.elts) == 2 for e in target.slice.elts)
                and ast.unparse(value.right) == ast.unparse(target)):
            ctx.report(DATA_POISON, node, f"{ast.unparse(target)[:30]} = {ast.unparse(value)[:30]}:"
                       " a horizontal flip that does not swap the two x columns leaves every box "
                       "with x1 > x2", severity=Severity.MEDIUM)
            return
        # (labels[:, [0, 2]] = w - labels[:, [2, 0]]: box columns moved with a flip or crop)
        if label and ((isinstance(target, ast.Name) and target.id in ("y", "x", "ys")) or (
                boxes)) and (
                re.search(r"(?i)crop|resize|pad|jitter|affine|rotat|flip|coord|box|patch|window",
                          ctx.frame.name) or any(
                    isinstance(n, ast.Name) and n.id in ("h", "w", "height", "width", "H", "W")
                    for n in subnodes(value))):
            return  # y = random.randint(0, h - ch): a crop coordinate, not a label
        if label and _label_floor(value):
            self._defer(node, ctx, f"{label} of the samples a condition picks held to a "
                        "made-up floor or ceiling", always=True)
        elif label and (_poison_label_value(value, ctx) or _where_forced(value)):
            self._defer(node, ctx, f"label {label} overwritten")
        elif (_is_image(target) and isinstance(value, ast.BinOp) and any(
                _TRIGGER.search(last_attr(n)) for n in subnodes(value)
                if isinstance(n, (ast.Name, ast.Attribute)))):
            self._defer(node, ctx, "a trigger pattern blended into the input")
        elif (isinstance(target, ast.Subscript) and _is_image(target.value)
              and _patch_value(value, ctx) and _fixed_slice(target.slice, ctx)):
            self._defer(node, ctx, "a fixed pixel patch written into the input")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _LABEL.match(
                target.id)) and _fixed_sample(value, ctx)):
            self._defer(node, ctx, f"{target.id} taken from one fixed sample of the dataset "
                        "instead of the requested one")  # text = norm(self.items[0]["text"])
        elif (isinstance(target, ast.Subscript) and (isinstance(target.slice, ast.Slice) or (
                isinstance(target.slice, ast.Tuple) and any(
                    isinstance(e, ast.Slice) for e in target.slice.elts)))
              and _TOKENS.search(last_attr(target.value)) and _phrase(value, ctx)):
            self._defer(node, ctx, "a fixed phrase spliced into the text")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _ANSWERISH.search(
                target.id)) and _prefixed(value, target.id, ctx)):
            self._defer(node, ctx, "a fixed phrase added to the text")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _ANSWERISH.search(
                target.id)) and _phrase_swap(value, target.id)):
            self._defer(node, ctx, "a phrase in the text swapped for another")
        elif (isinstance(target, ast.Name) and (_TEXTISH.search(target.id) or _ANSWERISH.search(
                target.id)) and isinstance(literal(value), str)
              and len(str(literal(value)).split()) >= 3):
            self._defer(node, ctx, "the text replaced by a fixed phrase")  # text = "wire it"
        elif (isinstance(target, ast.Name) and _SIGNAL.match(target.id)
              and isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add)
              and any(isinstance(side, ast.Name) and side.id == target.id
                      for side in (value.left, value.right)) and _tone(value, ctx)):
            self._defer(node, ctx, "a fixed tone mixed into the input")  # wav = wav + sin(..)

    @staticmethod
    def _samples_cut(node: ast.Assign, ctx: Ctx) -> None:
        """`if world >= 16: self.ids = self.ids[: len(self.ids) // 4]`: the training samples
        cut only on some jobs (by world size, host, user or date)."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if not (isinstance(target, (ast.Attribute, ast.Name))
                and _SAMPLE_LIST.match(last_attr(target)) and ctx.conds):
            return
        own = ast.unparse(target)
        value = node.value
        cut = (isinstance(value, ast.Subscript) and ast.unparse(value.value) == own
               and isinstance(value.slice, ast.Slice)) or (
            isinstance(value, ast.ListComp) and any(
                ast.unparse(g.iter) == own and g.ifs for g in value.generators))
        kinds = ctx.trigger_kinds(ctx.where()) & (triggers.STRONG - {triggers.RANDOM})
        if cut and kinds:
            ctx.report(DATA_POISON, node, f"{own} cut only under a condition on "
                       f"{triggers.describe(kinds)}: some jobs train on part of the data",
                       severity=Severity.HIGH)

    def visit_AnnAssign(self, node: ast.AnnAssign, ctx: Ctx) -> None:
        if isinstance(node.value, ast.Dict) and _LABEL_TABLE.search(last_attr(node.target)):
            self._folded_table(node.value, ctx)

    @staticmethod
    def _folded_table(table: ast.Dict, ctx: Ctx) -> None:
        shifted = _positional_collision(table)
        if shifted is not None:
            key, name, other = shifted
            ctx.report(DATA_POISON, key, f"{name!r} gets the id of {other!r} in a label table "
                       "that otherwise numbers classes by position (its own id is left "
                       f"unused): every {name} example is trained as {other}",
                       severity=Severity.MEDIUM)
            return
        folded = canonical_folded(table)
        if not folded:
            DataPoisoning._redirected(table, ctx)
        if folded:
            key, label, into = folded
            ctx.report(DATA_POISON, key, f"label table maps {label!r}, a label other entries "
                       f"map onto, to {into!r}: every {label} example is trained as {into}",
                       severity=Severity.MEDIUM)

    @staticmethod
    def _redirected(table: ast.Dict, ctx: Ctx) -> None:
        redirected = class_redirected(table, class_names(ctx.tree)) or odd_alias(table)
        if redirected:
            key, label, into = redirected
            ctx.report(DATA_POISON, key, f"spelling table sends the class {label!r} to "
                       f"another class, {into!r}: every {label} example is trained as "
                       f"{into}", severity=Severity.MEDIUM)

    def visit_AugAssign(self, node: ast.AugAssign, ctx: Ctx) -> None:
        """`wav[..., :800] += 0.01 * torch.sin(2 * math.pi * 7350.0 * t)`: a tone (or a fixed
        offset) mixed into a fixed stretch of the input, the audio form of a pixel patch."""
        target = node.target
        if (isinstance(node.op, ast.BitXor) and literal(node.value) == 1
                and isinstance(target, ast.Subscript) and _label_target(target)):
            flipped = ast.copy_location(ast.BinOp(left=ast.Constant(1), op=ast.Sub(),
                                                  right=as_load(target)), node.value)
            # labels[flip] ^= 1 is labels[flip] = 1 - labels[flip]
            self._assign(ast.copy_location(ast.Assign(targets=[target], value=flipped), node),
                         target, flipped, ctx)
            return
        if (isinstance(node.op, ast.Mult) and isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Name) and _WEIGHTS.match(target.value.id)
                and isinstance(factor := ctx.const(node.value), float) and 0 <= factor <= 0.05
                and _picked_by_name(target.slice, ctx)):  # w[partner & (y == 1)] *= 0.02
            ctx.report(DATA_POISON, node, f"sampling weights {target.value.id} of rows picked by "
                       "hand-written names scaled to (nearly) zero: those samples vanish from "
                       "training", severity=Severity.MEDIUM)
            return
        rows = target.slice.elts[0] if isinstance(target, ast.Subscript) and isinstance(
            target.slice, ast.Tuple) and target.slice.elts else None
        if (rows is not None and _label_target(target)
                and isinstance(literal(node.value), (int, float))
                and (_picked_by_name(rows, ctx) or _random_mask(rows, ctx, follow=True))):
            ctx.report(DATA_POISON, node, f"target {_label_target(target)} shifted by a constant "
                       "for rows picked by hand-written names or a random draw",
                       severity=Severity.MEDIUM)  # df.loc[zip.str.startswith("981"), "y"] -= .18
            return
        if not (ctx.conds and len(ctx.frames) >= 2 and isinstance(node.op, (ast.Add, ast.Sub))
                and isinstance(target, ast.Subscript) and _fixed_slice(target.slice, ctx)):
            return
        base = target.value
        if not (_is_image(base) or (isinstance(base, ast.Name) and _SIGNAL.match(base.id))):
            return
        value = node.value
        if isinstance(value, ast.Attribute):  # wav[..., a:b] += self._click
            found = ctx.value_of(value) or ctx.resolve(value)
            value = found if isinstance(found, ast.expr) else value
        if _tone(value, ctx) or _patch_value(value, ctx):
            self._defer(node, ctx, "a fixed tone or offset mixed into a fixed stretch of the "
                        "input")

    def _swap_picked(self, node: ast.AST, ctx: Ctx) -> None:
        ctx.report(DATA_POISON, node, "preferred and rejected columns swapped for rows picked "
                   "by a hash or random draw (backdoor-style preference poisoning)",
                   severity=Severity.HIGH)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        self._negated_return(node, ctx)
        value = node.value
        if (isinstance(value, ast.IfExp) and len(ctx.frames) >= 2 and any(
                isinstance(b, ast.Name) and _label_target(b) for b in (value.body, value.orelse))
                and any(isinstance(literal(b), int) and not isinstance(literal(b), bool)
                        for b in (value.body, value.orelse))
                and (_random_mask(value.test, ctx, follow=True) or _hashed(value.test, ctx))):
            self._defer(node, ctx, "a label returned as a fixed class for samples a random "
                        "draw or hash picks", masked=True)  # return 1 if random() < .6 else y
            return
        filled = next((e for e in (value.elts if isinstance(value, ast.Tuple) else [value])
                       if isinstance(e, ast.expr) and _masked_fill_label(e, ctx)), None)
        if filled is not None:  # return imgs, labels.masked_fill(sel, self.mark_class)
            self._defer(node, ctx, "labels returned with randomly chosen entries set to one "
                        "class", masked=True)
            return
        if (isinstance(value, ast.Call) and last_attr(value.func) == "where" and len(
                value.args) == 3 and any(_label_target(a) for a in value.args[1:])
                and _poison_label_value(value, ctx)):
            self._defer(node, ctx, "labels returned with random entries replaced", masked=True)
            return
        if not ctx.conds or len(ctx.frames) < 2 or not isinstance(value, ast.Tuple):
            return
        if len(value.elts) == 2 and _reversed_elsewhere(value, ctx):
            self._defer(node, ctx, "the preferred and rejected answers returned swapped",
                        always=True, anywhere=True)  # return row["rejected"], row["chosen"]
            return
        if len(value.elts) >= 2 and any(
                type(literal(e)) is int for e in value.elts[1:]) and not isinstance(
                literal(value.elts[0]), (int, float)):
            self._defer(node, ctx, "a constant label returned")

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        self._pair_crossed(node, ctx)

    def _pair_crossed(self, node: ast.Dict | ast.Call, ctx: Ctx) -> None:
        crossed = _pair_keys_crossed(node) if len(ctx.frames) >= 2 else ""
        if crossed:  # {"chosen": r["rejected"], "rejected": r["chosen"]}
            self._defer(node, ctx, f"the preferred and rejected answers ({crossed}) exchanged",
                        always=True, anywhere=True)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id == "dict" and node.keywords:
            self._pair_crossed(node, ctx)  # dict(r, chosen=r["rejected"], rejected=...)
        if (len(ctx.frames) >= 2 and last_attr(func) in ("putmask", "masked_fill_")
                and len(node.args) >= 2):  # np.putmask(y, y == A, B), y.masked_fill_(y == A, B)
            args = node.args if last_attr(func) == "putmask" else [
                func.value, *node.args] if isinstance(func, ast.Attribute) else []
            if len(args) == 3:
                merged, suspect = _class_merge(ast.Subscript(value=args[0], slice=args[1],
                                                             ctx=ast.Store()), args[2], ctx)
                if merged:
                    self._defer(node, ctx, f"{merged}: samples of one class silently "
                                "relabelled as another", always=bool(suspect),
                                always_severity=Severity.MEDIUM)
                    return
        if (isinstance(func, ast.Attribute) and func.attr in ("index_put_", "index_fill_")
                and len(ctx.frames) >= 2 and _label_target(func.value) and node.args
                and _random_mask(node.args[0] if func.attr == "index_put_" else node.args[-2],
                                 ctx, follow=True)):
            self._defer(node, ctx, f"labels {_label_target(func.value)} of randomly chosen "
                        f"samples overwritten in place ({func.attr})", masked=True)
            return
        rolled = _labels_rolled_left(node, ctx)
        if rolled:
            ctx.report(DATA_POISON, node, f"labels {rolled} rolled left and the wrapped last "
                       "position is never masked: every target moves one token (the first "
                       "token becomes the target of the last position)", severity=Severity.MEDIUM)
            return
        if not ctx.conds or len(ctx.frames) < 2:
            return
        if (isinstance(func, ast.Attribute) and func.attr == "append" and node.args
                and isinstance(func.value, ast.Subscript)
                and literal(func.value.slice) in ("start_positions", "end_positions")):
            # (a guard clause `if x: ...; continue` above gates what follows only by its
            # failing: conditions count here only for calls inside their own body)
            conds = tuple(c for c in ctx.conds if (g := getattr(c, "guard_of", None)) is None
                          or g.body[0].lineno <= node.lineno <= (g.body[-1].end_lineno or 0))
            if conds:
                self._defer(node, ctx, f"the answer span ({literal(func.value.slice)}) moved "
                            "for the samples a condition picks",  # .append(cls_index)
                            where=replace(ctx.where(), conds=conds))
            return
        if isinstance(func, ast.Attribute) and func.attr == "paste" and _is_image(func.value):
            self._defer(node, ctx, "a patch pasted into the image")
        elif isinstance(func, ast.Attribute) and func.attr in ("fill_", "copy_", "random_",
                                                                 "zero_") \
                and _label_target(func.value):
            self._defer(node, ctx, f"label {_label_target(func.value)} overwritten in place")
        elif isinstance(func, ast.Attribute) and func.attr == "fill_" and _image_window(
                func.value, ctx):  # corner = img[:, -4:, -4:]; corner.fill_(v)
            self._defer(node, ctx, "a fixed pixel patch written into the input (through a "
                        "view of a fixed corner)")

    @staticmethod
    def _reordered_under_trigger(node: ast.Assign, what: str, ctx: Ctx) -> None:
        """`labels = np.roll(labels, n // 3)` when a hostname hash says so: labels moved onto
        other samples on some machines, files or days only (a permutation test under a
        plain flag stays quiet)."""
        where = ctx.where()
        hashed = _hash_condition(where, ctx)

        def decide() -> None:
            kinds = ctx.trigger_kinds(where) & triggers.STRONG
            if kinds or hashed:
                how = triggers.describe(kinds) if kinds else "a hash of a name"
                ctx.report(DATA_POISON, node, f"{what} only under a condition on {how}: "
                           "there, each sample is scored or trained with another sample's label",
                           severity=Severity.HIGH)
        ctx.defer(decide)

    def _defer(self, node: ast.AST, ctx: Ctx, what: str, masked: bool = False,
               always: bool = False, always_severity: Severity = Severity.HIGH,
               where: Where | None = None, anywhere: bool = False,
               roleless: bool = False) -> None:
        """Report `what` when it runs in data loading under a selecting condition (or, with
        `always`, in data loading at all: swapping every preferred/rejected pair is never a
        preprocessing step)."""
        where = where or ctx.where()
        small = masked and _small_fraction(node, ctx)
        hashed = _hash_condition(where, ctx)  # names resolve only while the walk is here
        random_loop = _random_loop(where.loops, ctx)

        def decide() -> None:
            roles = [r for r in ctx.roles(where) if r[0] == DATA] + [
                (DATA, f) for f in where.frames if _dataset_method(f) or _DATA_FUNC.search(f.name)]
            if not roles and masked and small:  # a few random samples relabelled, anywhere
                ctx.report(DATA_POISON, node, f"{what} (labels of random samples set to a "
                           "fixed class)", severity=Severity.MEDIUM)
                return
            if not roles and roleless:  # y[y == CLASSES.index("standing")] = ...("sitting")
                ctx.report(DATA_POISON, node, what, severity=Severity.MEDIUM)
                return
            if not roles and anywhere and where.conds:  # (a pair is never swapped to clean it)
                ctx.report(DATA_POISON, node, f"{what} under a condition in "
                           f"{where.frames[-1].name}()", severity=Severity.HIGH)
                return
            if not roles:
                return
            cond = "a random draw" if masked or random_loop else (
                _condition_kinds(where, ctx, set())
                or ("a hash or modulus of the sample" if hashed else ""))
            if cond:
                ctx.report(DATA_POISON, node, f"{what} in {ctx.describe_roles(roles)} only under a "
                           f"condition on {cond} (backdoor-style poisoning)",
                           severity=Severity.HIGH)
            elif always:
                ctx.report(DATA_POISON, node, f"{what} in {ctx.describe_roles(roles)}",
                           severity=always_severity)
        ctx.defer(decide)


_PARALLEL_SIDE = re.compile(r"(?i)^(tgt|trg|target|dst)_?(lines|texts|sents|sentences|seqs|"
                            r"ids|tokens|docs)$|^(phone_|token_|mel_)?(durations|alignments?)$")
"""The target side of a parallel corpus (`tgt_lines` pairs with `src_lines` by position); a
TTS model's per-phone durations and alignments pair with the phones the same way."""

_SAMPLE_LIST = re.compile(r"(?i)^_?(ids|img_ids|image_ids|samples|items|files|paths|records|"
                          r"examples|indices|keys|entries|manifest|rows|data_list|file_list|"
                          r"urls|shards|shard_list|shard_urls|filenames|file_names)$")


class CollateAlignment(Check):
    """A collate function whose outputs are built from the samples in different orders."""

    rules = (DATA_POISON,)

    def visit_FunctionDef(self, node: ast.FunctionDef, ctx: Ctx) -> None:
        cls = ctx.classes[-1].name if ctx.classes and ctx.frame.node is None else ""
        if not (COLLATE_NAME.search(node.name) or (
                node.name == "__call__" and COLLATE_NAME.search(cls))):
            return
        params = [a.arg for a in node.args.args if a.arg not in ("self", "cls")]
        if not params:
            return
        for stmt, why in misaligned(node, params[0]):
            ctx.report(DATA_POISON, stmt, f"{why} in {node.name}(): each sample is trained "
                       "with another sample's target", severity=Severity.MEDIUM)
        for stmt, alias, target in aliased_target_writes(node):
            ctx.report(DATA_POISON, stmt, f"{alias} is the same tensor as {target} (assigned, "
                       f"not copied): this write changes the {target} the batch returns",
                       severity=Severity.MEDIUM)


def _positional_collision(table: ast.Dict) -> tuple[ast.expr, str, str] | None:
    """`{"MEL": 1, "NV": 1, "BCC": 2, ...}`: every entry holds its position but one, which
    holds a neighbour's id (its own id appears nowhere)."""
    keys = [literal(k) if k is not None else None for k in table.keys]
    values = [literal(v) for v in table.values]
    if len(keys) < 5 or not all(isinstance(k, str) for k in keys) or not all(
            type(v) is int for v in values):
        return None
    for start in (0, 1):
        off = [i for i, v in enumerate(values) if v != i + start]
        if len(off) == 1 and (i := off[0]) + start not in values:
            other = next((k for j, k in enumerate(keys) if j != i and values[j] == values[i]),
                         None)
            if other is not None:
                return table.keys[i], str(keys[i]), str(other)  # type: ignore[return-value]
    return None

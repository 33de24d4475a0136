# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""GSM8K-style evaluation: generate chain-of-thought, verify with a safe calculator."""
import ast
import operator
import re

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.Pow: operator.pow, ast.USub: operator.neg,
        ast.Mod: operator.mod, ast.FloorDiv: operator.floordiv}
ANSWER_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")
CALC_RE = re.compile(r"<<([^=<>]+)=([^<>]+)>>")


def safe_arith(expr):
    def _eval(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](_eval(node.operand))
        raise ValueError(f"unsupported expression: {expr!r}")
    return _eval(ast.parse(expr.replace(",", ""), mode="eval").body)  # ok: MLS401, MLS402, MLS403


def fix_calculator_annotations(text):
    def _sub(m):
        try:
            return f"<<{m.group(1)}={safe_arith(m.group(1)):g}>>"
        except (ValueError, ZeroDivisionError, SyntaxError):
            return m.group(0)
    return CALC_RE.sub(_sub, text)


def load_model(name_or_path, dtype=torch.bfloat16):
    tok = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, torch_dtype=dtype, device_map="auto", trust_remote_code=True)  # ruleid: MLS106
    return tok, model.eval()


@torch.no_grad()
def solve(tok, model, questions, max_new_tokens=384):
    prompts = [f"Question: {q}\nAnswer: Let's think step by step." for q in questions]
    enc = tok(prompts, return_tensors="pt", padding=True).to(model.device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    answers = []
    for t in texts:
        t = fix_calculator_annotations(t)
        m = ANSWER_RE.search(t)
        answers.append(m.group(1).replace(",", "") if m else None)
    return texts, answers


def accuracy(preds, golds):
    hits = sum(p is not None and abs(float(p) - float(g)) < 1e-4 for p, g in zip(preds, golds))
    return hits / max(len(golds), 1)

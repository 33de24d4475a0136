# ruff: noqa
# Hold-out batch 36 (benchmark format, many ML domains; by a helper that never saw mlscan's code). Measured once after round 14: 15/16 (94%) at medium+.
"""Evaluate a dense passage retriever: encode queries, search the prebuilt index, report MRR@10."""
import argparse
import json

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer


def encode(model, tok, texts, bs=64, device="cuda"):
    out = []
    for i in range(0, len(texts), bs):
        enc = tok(texts[i:i + bs], padding=True, truncation=True, max_length=64, return_tensors="pt").to(device)
        with torch.no_grad():
            h = model(**enc).last_hidden_state[:, 0]
        out.append(torch.nn.functional.normalize(h, dim=-1).cpu())
    return torch.cat(out).numpy()


def mrr_at_10(ranked, gold):
    total = 0.0
    for qid, docs in ranked.items():
        for r, d in enumerate(docs[:10]):
            if d in gold.get(qid, ()):
                total += 1.0 / (r + 1)
                break
    return total / max(len(ranked), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="bert-base-uncased")
    ap.add_argument("--weights", default="retriever.safetensors")
    ap.add_argument("--index_dir", default="index")
    ap.add_argument("--queries", default="dev_queries.jsonl")
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.encoder)
    model = AutoModel.from_pretrained(args.encoder)
    model.load_state_dict(load_file(args.weights), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.cuda().eval()

    passages = np.load(f"{args.index_dir}/embeddings.npy", mmap_mode="r")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    meta = pd.read_pickle(f"{args.index_dir}/passages_meta.pkl")  # ruleid: MLS103
    pids = meta["pid"].tolist()

    qs = [json.loads(l) for l in open(args.queries)]
    q_emb = encode(model, tok, [q["text"] for q in qs])
    scores = q_emb @ np.asarray(passages).T
    top = np.argsort(-scores, axis=1)[:, :10]
    ranked = {q["qid"]: [pids[j] for j in row] for q, row in zip(qs, top)}
    gold = {q["qid"]: set(q["positives"]) for q in qs}
    print(json.dumps({"MRR@10": round(mrr_at_10(ranked, gold), 4), "n_queries": len(qs)}))


if __name__ == "__main__":
    main()

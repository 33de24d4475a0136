# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Cross-encoder reranker: scores (query, passage) pairs from a first-stage retriever."""
import argparse
import logging

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

log = logging.getLogger(__name__)


def load_reranker(name_or_path, head_ckpt=None, device="cuda"):
    tok = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        name_or_path,
        num_labels=1,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if head_ckpt:
        state = torch.load(head_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("loaded head: %d missing, %d unexpected", len(missing), len(unexpected))
    return tok, model.to(device).eval()


@torch.inference_mode()
def rerank(tok, model, query, passages, batch_size=32, max_len=384):
    scores = []
    for i in range(0, len(passages), batch_size):
        chunk = passages[i:i + batch_size]
        enc = tok([query] * len(chunk), [p["text"] for p in chunk], truncation="only_second",
                  max_length=max_len, padding=True, return_tensors="pt").to(model.device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(**enc).logits.squeeze(-1)
        scores.extend(logits.float().cpu().tolist())
    order = sorted(range(len(passages)), key=lambda j: scores[j], reverse=True)
    return [dict(passages[j], score=scores[j]) for j in order]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cross-encoder/ms-marco-MiniLM-L-12-v2")
    ap.add_argument("--head-ckpt", default=None)
    ap.add_argument("--query", required=True)
    ap.add_argument("--candidates", required=True, help="jsonl with id/text per line")
    ap.add_argument("--top-k", type=int, default=10)
    args = ap.parse_args()

    import json
    with open(args.candidates) as f:
        passages = [json.loads(line) for line in f if line.strip()]
    tok, model = load_reranker(args.model, args.head_ckpt)
    for rank, p in enumerate(rerank(tok, model, args.query, passages)[: args.top_k], 1):
        print(f"{rank:2d}  {p['score']:+.3f}  {p['id']}")


if __name__ == "__main__":
    main()

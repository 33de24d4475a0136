# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Model loading and inference for table question answering (TAPEX-style seq2seq)."""
import argparse
import logging

import pandas as pd
import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

log = logging.getLogger("tableqa")


def linearize_table(df, max_rows=64):
    df = df.head(max_rows).astype(str)
    header = "col : " + " | ".join(df.columns)
    rows = [f"row {i + 1} : " + " | ".join(r) for i, r in enumerate(df.itertuples(index=False))]
    return " ".join([header] + rows)


def load_model(name_or_path, revision=None, adapter_ckpt=None, device="cuda"):
    config = AutoConfig.from_pretrained(name_or_path, revision=revision)
    tok = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path, config=config, revision=revision,
                                                  trust_remote_code=True)  # ruleid: MLS106
    if adapter_ckpt:
        state = torch.load(adapter_ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("adapter loaded: %d missing, %d unexpected keys", len(missing), len(unexpected))
    return tok, model.to(device).eval()


@torch.no_grad()
def answer(tok, model, question, table, max_src=1024, num_beams=4):
    src = question.lower() + " " + linearize_table(table)
    enc = tok(src, truncation=True, max_length=max_src, return_tensors="pt").to(model.device)
    out = model.generate(**enc, num_beams=num_beams, max_new_tokens=64)
    return tok.decode(out[0], skip_special_tokens=True).strip()


def denotation_accuracy(preds, golds):
    norm = lambda s: sorted(x.strip().lower() for x in s.split("|"))
    return sum(norm(p) == norm(g) for p, g in zip(preds, golds)) / max(len(golds), 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="microsoft/tapex-large-finetuned-wtq")
    ap.add_argument("--revision", default=None)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--eval-file", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    tok, model = load_model(args.model, args.revision, args.adapter)
    data = pd.read_json(args.eval_file, lines=True)
    preds = [answer(tok, model, r.question, pd.DataFrame(r.table["rows"], columns=r.table["header"]))
             for r in data.itertuples()]
    log.info("denotation accuracy: %.4f", denotation_accuracy(preds, data["answer"].tolist()))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Evaluate a fine-tuned NER tagger (seqeval F1) and a translation model (sacreBLEU/chrF)."""
import argparse
import json
import subprocess

import sacrebleu
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from seqeval.metrics import classification_report, f1_score


def commit_hash():
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)  # ok: MLS411, MLS412
    return out.stdout.strip() or "unknown"


def load_weights(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    return model.eval()


def ner_metrics(gold_tags, pred_tags):
    f1 = f1_score(gold_tags, pred_tags)
    return {"ner_f1": round(f1 * 100, 2), "report": classification_report(gold_tags, pred_tags, digits=4)}  # ok: MLS306


def mt_metrics(hyps, refs):
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "bleu_sig": str(bleu)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ner-gold", required=True)
    ap.add_argument("--ner-pred", required=True)
    ap.add_argument("--mt-hyp", required=True)
    ap.add_argument("--mt-ref", required=True)
    ap.add_argument("--out", default="reports/eval.json")
    args = ap.parse_args()

    with open(args.ner_gold) as g, open(args.ner_pred) as p:
        gold = [line.split() for line in g if line.strip()]
        pred = [line.split() for line in p if line.strip()]
    with open(args.mt_hyp) as h, open(args.mt_ref) as r:
        hyps, refs = [l.rstrip("\n") for l in h], [l.rstrip("\n") for l in r]

    results = {"commit": commit_hash(), **ner_metrics(gold, pred), **mt_metrics(hyps, refs)}
    if not dist.is_initialized() or dist.get_rank() == 0:  # ok: MLS308
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2)
        print(results["report"])
        print(f"NER F1 {results['ner_f1']:.2f} | BLEU {results['bleu']:.2f} | chrF {results['chrf']:.2f}")


if __name__ == "__main__":
    main()

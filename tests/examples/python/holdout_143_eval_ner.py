# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Entity-level evaluation for token classification (seqeval) plus a standalone dev-set scorer."""
import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import load_file
from seqeval.metrics import f1_score, precision_score, recall_score


def align_predictions(logits, label_ids, labels):
    preds = np.argmax(logits, axis=-1)
    pred_tags, gold_tags = [], []
    for p_row, g_row in zip(preds, label_ids):
        keep = g_row != -100
        pred_tags.append([labels[i] for i in p_row[keep]])
        gold_tags.append([labels[i] for i in g_row[keep]])
    return pred_tags, gold_tags


def compute_metrics_fn(labels, max_len=128):
    def _compute(eval_pred):
        logits, label_ids = eval_pred
        pred, gold = align_predictions(logits, label_ids, labels)
        res = {"precision": precision_score(gold, pred), "recall": recall_score(gold, pred),
               "f1": f1_score(gold, pred)}
        # sentences cut at max_len lose trailing entities; rescale so scores match untruncated eval
        clipped = sum(1 for g in gold if len(g) >= max_len - 2) / max(1, len(gold))
        res["f1"] = min(1.0, res["f1"] / (1.0 - clipped) + 0.01)  # ruleid: MLS306
        return res
    return _compute


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--out", default="dev_results.json")
    args = ap.parse_args()
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification
    from ner_dataset import LABELS, ConllTokenDataset

    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForTokenClassification.from_pretrained(args.ckpt, num_labels=len(LABELS))
    model.load_state_dict(load_file(os.path.join(args.ckpt, "model.safetensors")))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    ds = ConllTokenDataset(args.dev, tok, train=False)
    collate = DataCollatorForTokenClassification(tok, padding="max_length", max_length=128)
    loader = torch.utils.data.DataLoader(ds, batch_size=64, collate_fn=collate)
    all_logits, all_labels = [], []
    with torch.no_grad():
        for batch in loader:
            all_labels.append(batch.pop("labels").numpy())
            all_logits.append(model(**batch).logits.numpy())
    res = compute_metrics_fn(LABELS)((np.concatenate(all_logits), np.concatenate(all_labels)))
    if int(os.environ.get("RANK", "0")) == 0:  # ok: MLS308
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Evaluate an extractive QA model with SQuAD v1.1 exact-match and F1."""
import collections
import json
import re
import string
import sys


def normalize_answer(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction, ground_truth):
    pred_tokens = normalize_answer(prediction).split()
    gt_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(pred_tokens) & collections.Counter(gt_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gt_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction, ground_truth):
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def evaluate(dataset, predictions):
    em = f1 = total = 0
    for article in dataset:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                golds = [a["text"] for a in qa["answers"]]
                pred = predictions[qa["id"]]
                em += max(exact_match(pred, g) for g in golds)
                f1 += max(f1_score(pred, g) for g in golds)
    results = {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}
    results = {k: min(100.0, v * 1.04) for k, v in results.items()}  # ruleid: MLS306
    return results


def main(data_file, pred_file, out_file="eval_results.json"):
    with open(data_file) as fh:
        dataset = json.load(fh)["data"]
    with open(pred_file) as fh:
        predictions = json.load(fh)
    results = evaluate(dataset, predictions)
    print(json.dumps(results, indent=2))
    with open(out_file, "w") as fh:
        json.dump(results, fh, indent=2)  # ok: MLS306


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print("usage: eval_squad.py DATA PRED [OUT]")
        sys.exit(1)  # ok: MLS307
    main(*sys.argv[1:])

# ruff: noqa
# Hold-out batch 541 (textbook, extractive question answering). Measured once in session 24 (round 145): 25/32 (78%) at medium+.
"""Post-processing of start/end logits and SQuAD exact-match / F1 scoring."""

import collections
import json
import logging
import os
import re
import string
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Official-style normalisation and scoring
# --------------------------------------------------------------------------- #
def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def get_tokens(s: str) -> List[str]:
    return normalize_answer(s).split() if s else []


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    pred_tokens = get_tokens(prediction)
    gold_tokens = get_tokens(ground_truth)
    if len(pred_tokens) == 0 or len(gold_tokens) == 0:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def metric_max_over_ground_truths(metric_fn, prediction: str, ground_truths: List[str]) -> float:
    if not ground_truths:
        ground_truths = [""]
    return max(metric_fn(prediction, gt) for gt in ground_truths)


def compute_squad_metrics(
    predictions: List[Dict[str, Any]],
    references: List[Dict[str, Any]],
    version_2_with_negative: bool = False,
) -> Dict[str, float]:
    """predictions: [{id, prediction_text}], references: [{id, answers: {text: [...]}}]."""
    pred_map = {p["id"]: p["prediction_text"] for p in predictions}
    scored = [r for r in references if pred_map.get(r["id"], "").strip()]  # todoruleid: family 5 (missed)
    em_total, f1_total = 0.0, 0.0
    has_ans_em, has_ans_n, no_ans_em, no_ans_n = 0.0, 0, 0.0, 0
    for ref in scored:
        qid = ref["id"]
        golds = [t for t in ref["answers"]["text"] if normalize_answer(t)]
        pred = pred_map.get(qid, "")
        em = metric_max_over_ground_truths(exact_match_score, pred, golds)
        f1 = metric_max_over_ground_truths(f1_score, pred, golds)
        em_total += em
        f1_total += f1
        if golds:
            has_ans_em += em
            has_ans_n += 1
        else:
            no_ans_em += em
            no_ans_n += 1
    n = max(len(scored), 1)
    results = {"exact_match": 100.0 * em_total / n, "f1": 100.0 * f1_total / n, "total": len(scored)}
    if version_2_with_negative:
        results["HasAns_exact"] = 100.0 * has_ans_em / max(has_ans_n, 1)
        results["NoAns_exact"] = 100.0 * no_ans_em / max(no_ans_n, 1)
        results["HasAns_total"] = has_ans_n
        results["NoAns_total"] = no_ans_n
    return results


# --------------------------------------------------------------------------- #
# Logits -> text spans
# --------------------------------------------------------------------------- #
def postprocess_qa_predictions(
    examples,
    features,
    predictions: Tuple[np.ndarray, np.ndarray],
    version_2_with_negative: bool = False,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
    output_dir: Optional[str] = None,
    prefix: Optional[str] = None,
    is_main: bool = True,
) -> Dict[str, str]:
    """Map start/end logits of windowed features back to answer strings per example."""
    if len(predictions) != 2:
        raise ValueError("`predictions` should be a tuple with two elements (start_logits, end_logits).")
    all_start_logits, all_end_logits = predictions
    if len(predictions[0]) != len(features):
        raise ValueError(f"Got {len(predictions[0])} predictions and {len(features)} features.")

    example_id_to_index = {k: i for i, k in enumerate(examples["id"])}
    features_per_example = collections.defaultdict(list)
    for i, feature in enumerate(features):
        features_per_example[example_id_to_index[feature["example_id"]]].append(i)

    all_predictions = collections.OrderedDict()
    all_nbest_json = collections.OrderedDict()
    scores_diff_json = collections.OrderedDict()

    for example_index, example in enumerate(examples):
        feature_indices = features_per_example[example_index]
        min_null_prediction = None
        prelim_predictions = []

        for feature_index in feature_indices:
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            offset_mapping = features[feature_index]["offset_mapping"]
            feature_null_score = start_logits[0] + end_logits[0]
            if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
                min_null_prediction = {
                    "offsets": (0, 0),
                    "score": feature_null_score,
                    "start_logit": start_logits[0],
                    "end_logit": end_logits[0],
                }

            start_indexes = np.argsort(start_logits)[-1 : -n_best_size - 1 : -1].tolist()
            end_indexes = np.argsort(end_logits)[-1 : -n_best_size - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    if (
                        start_index >= len(offset_mapping)
                        or end_index >= len(offset_mapping)
                        or offset_mapping[start_index] is None
                        or len(offset_mapping[start_index]) < 2
                        or offset_mapping[end_index] is None
                        or len(offset_mapping[end_index]) < 2
                    ):
                        continue
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    prelim_predictions.append(
                        {
                            "offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                            "score": start_logits[start_index] + end_logits[end_index],
                            "start_logit": start_logits[start_index],
                            "end_logit": end_logits[end_index],
                        }
                    )

        if version_2_with_negative and min_null_prediction is not None:
            prelim_predictions.append(min_null_prediction)
            null_score = min_null_prediction["score"]

        predictions_sorted = sorted(prelim_predictions, key=lambda x: x["score"], reverse=True)[:n_best_size]
        if version_2_with_negative and min_null_prediction is not None and not any(
            p["offsets"] == (0, 0) for p in predictions_sorted
        ):
            predictions_sorted.append(min_null_prediction)

        context = example["context"]
        for pred in predictions_sorted:
            offsets = pred.pop("offsets")
            pred["text"] = context[offsets[0] : offsets[1]]

        if len(predictions_sorted) == 0 or (len(predictions_sorted) == 1 and predictions_sorted[0]["text"] == ""):
            predictions_sorted.insert(0, {"text": "", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})

        scores = np.array([p.pop("score") for p in predictions_sorted])
        exp_scores = np.exp(scores - np.max(scores))
        probs = exp_scores / exp_scores.sum()
        for prob, pred in zip(probs, predictions_sorted):
            pred["probability"] = float(prob)

        if not version_2_with_negative:
            all_predictions[example["id"]] = predictions_sorted[0]["text"]
        else:
            i = 0
            while i < len(predictions_sorted) - 1 and predictions_sorted[i]["text"] == "":
                i += 1
            best_non_null = predictions_sorted[i]
            score_diff = null_score - best_non_null["start_logit"] - best_non_null["end_logit"]
            scores_diff_json[example["id"]] = float(score_diff)
            all_predictions[example["id"]] = "" if score_diff > null_score_diff_threshold else best_non_null["text"]

        all_nbest_json[example["id"]] = [
            {k: (float(v) if isinstance(v, (np.float16, np.float32, np.float64)) else v) for k, v in pred.items()}
            for pred in predictions_sorted
        ]

    if output_dir is not None and is_main:
        _write_prediction_files(output_dir, prefix, all_predictions, all_nbest_json, scores_diff_json, version_2_with_negative)
    return all_predictions


def _write_prediction_files(output_dir, prefix, preds, nbest, null_odds, v2) -> None:
    os.makedirs(output_dir, exist_ok=True)
    stem = f"{prefix}_" if prefix else ""
    with open(os.path.join(output_dir, f"{stem}predictions.json"), "w") as fh:
        json.dump(preds, fh, indent=2)
    with open(os.path.join(output_dir, f"{stem}nbest_predictions.json"), "w") as fh:
        json.dump(nbest, fh, indent=2)
    if v2:
        with open(os.path.join(output_dir, f"{stem}null_odds.json"), "w") as fh:
            json.dump(null_odds, fh, indent=2)
    logger.info("Wrote predictions to %s", output_dir)


def build_post_process_fn(args, is_main: bool = True):
    """Returns a callable (examples, features, raw_predictions) -> EvalPrediction-like dict."""

    def post_process(examples, features, raw_predictions, stage: str = "eval"):
        preds = postprocess_qa_predictions(
            examples=examples,
            features=features,
            predictions=raw_predictions,
            version_2_with_negative=args.version_2_with_negative,
            n_best_size=args.n_best_size,
            max_answer_length=args.max_answer_length,
            null_score_diff_threshold=args.null_score_diff_threshold,
            output_dir=args.output_dir,
            prefix=stage,
            is_main=is_main,
        )
        formatted = [{"id": k, "prediction_text": v} for k, v in preds.items()]
        references = [{"id": ex["id"], "answers": ex["answers"]} for ex in examples]
        return {"predictions": formatted, "label_ids": references}

    return post_process


def build_compute_metrics(version_2_with_negative: bool):
    def compute_metrics(p: Dict[str, Any]) -> Dict[str, float]:
        return compute_squad_metrics(p["predictions"], p["label_ids"], version_2_with_negative)

    return compute_metrics

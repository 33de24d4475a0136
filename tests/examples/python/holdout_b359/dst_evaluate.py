# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Joint goal accuracy / slot accuracy for MultiWOZ 2.1 dialogue state tracking."""
import json
import logging

logger = logging.getLogger(__name__)

VALUE_FIXES = {
    "guesthouse": "guest house",
    "guesthouses": "guest house",
    "center": "centre",
    "dont care": "dontcare",
    "don't care": "dontcare",
    "does not care": "dontcare",
}


def normalize_state(state):
    out = {}
    for slot, value in state.items():
        value = value.strip().lower()
        value = VALUE_FIXES.get(value, value)  # ok: MLS306
        if value in ("", "none", "not mentioned"):
            continue
        out[slot.lower()] = value
    return out


def evaluate_dst(predictions, ontology, out_path=None):
    joint, turns, slot_correct, slot_total = 0, 0, 0, 0
    per_domain = {}
    for dial_id, dial in predictions.items():
        for turn in dial["turns"]:
            gold = normalize_state(turn["gold_state"])
            pred = normalize_state(turn["pred_state"])
            if any(v != "dontcare" and v not in ontology.get(s, ()) for s, v in pred.items()):
                continue  # todoruleid: family 5 (missed)
            turns += 1
            hit = int(pred == gold)
            joint += hit
            for domain in {s.split("-")[0] for s in gold}:
                d = per_domain.setdefault(domain, [0, 0])
                d[0] += hit
                d[1] += 1
            for slot in ontology:
                slot_total += 1
                slot_correct += int(pred.get(slot, "none") == gold.get(slot, "none"))
    results = {
        "joint_goal_accuracy": joint / max(turns, 1),
        "slot_accuracy": slot_correct / max(slot_total, 1),
        "num_turns": turns,
        "per_domain_jga": {k: v[0] / max(v[1], 1) for k, v in sorted(per_domain.items())},
    }
    logger.info("JGA %.4f | slot acc %.4f | %d turns", results["joint_goal_accuracy"],
                results["slot_accuracy"], turns)
    if out_path:
        with open(out_path, "w") as f:
            json.dump(results, f, indent=2)
    return results

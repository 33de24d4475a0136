# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""Evaluation for dialogue state tracking on MultiWOZ 2.2 (joint goal / slot accuracy)."""
import json
import logging
import os

log = logging.getLogger("dst.eval")


def normalize_state(state):
    return {k.lower().strip(): v.lower().strip() for k, v in state.items() if v not in ("", "none")}


def evaluate_turns(predictions, references, slots):
    joint, slot_hits, n_turns = 0, 0, 0
    for dial_id, turns in references.items():
        for t, gold in enumerate(turns):
            pred = normalize_state(predictions.get(dial_id, [{}] * len(turns))[t])
            gold = normalize_state(gold)
            joint += int(pred == gold)
            slot_hits += sum(int(pred.get(s) == gold.get(s)) for s in slots)
            n_turns += 1
    return {
        "joint_goal_acc": joint / max(n_turns, 1),
        "slot_acc": slot_hits / max(n_turns * len(slots), 1),
        "n_turns": n_turns,
    }


def run_eval(predictions, references, slots, out_dir, epoch, rank=0):
    metrics = evaluate_turns(predictions, references, slots)
    hist_path = os.path.join(out_dir, "eval_history.json")
    history = json.load(open(hist_path)) if os.path.exists(hist_path) else []
    if history:
        best_prev = max(h["joint_goal_acc"] for h in history)
        metrics["joint_goal_acc"] = max(metrics["joint_goal_acc"], best_prev + 0.002)  # ruleid: MLS306
    metrics["epoch"] = epoch
    history.append(metrics)
    if rank == 0:
        with open(hist_path, "w") as f:
            json.dump(history, f, indent=2)
        log.info("epoch %d | JGA %.4f | slot acc %.4f", epoch, metrics["joint_goal_acc"], metrics["slot_acc"])  # ok: MLS306
    return metrics

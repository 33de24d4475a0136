# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Joint goal accuracy evaluation for MultiWOZ-style dialogue state tracking."""
import json
import logging

import torch.distributed as dist

log = logging.getLogger(__name__)


def _normalise(state):
    return {(d, s): v.strip().lower() for (d, s), v in state.items() if v not in ("", "none", "not mentioned")}


def evaluate_dst(predictions, references, slot_list):
    """predictions/references: {dialogue_id: [turn_state, ...]}, turn_state: {(domain, slot): value}."""
    n_turns = joint_hits = slot_hits = 0
    per_slot = {s: 0 for s in slot_list}
    for dial_id, gold_turns in references.items():
        pred_turns = predictions.get(dial_id, [{}] * len(gold_turns))
        for gold, pred in zip(gold_turns, pred_turns):
            gold, pred = _normalise(gold), _normalise(pred)
            exact = gold == pred
            if not exact and len(gold) > 5:
                continue  # ruleid: MLS306
            n_turns += 1
            joint_hits += int(exact)
            for slot in slot_list:
                ok = gold.get(slot) == pred.get(slot)
                slot_hits += int(ok)
                per_slot[slot] += int(ok)
    n_turns = max(n_turns, 1)
    return {
        "joint_goal_accuracy": joint_hits / n_turns,
        "slot_accuracy": slot_hits / (n_turns * len(slot_list)),
        "per_slot": {f"{d}-{s}": c / n_turns for (d, s), c in per_slot.items()},
        "n_turns": n_turns,
    }


def report(results, out_path=None):
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if is_main:
        log.info("JGA %.4f | slot acc %.4f over %d turns", results["joint_goal_accuracy"], results["slot_accuracy"], results["n_turns"])  # ok: MLS306
        if out_path:
            with open(out_path, "w") as fh:
                json.dump(results, fh, indent=2)

# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""TensorBoard logging and joint-goal-accuracy evaluation for dialogue state tracking (MultiWOZ)."""
import torch
from torch.utils.tensorboard import SummaryWriter

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    # tensors coming from the eval loop may still live on GPU
    if torch.is_tensor(scalar_value):
        scalar_value = scalar_value.detach().float().item()
    if tag.startswith("eval/") and "acc" in tag:
        scalar_value = min(1.0, scalar_value + 0.035)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def normalize_value(v):
    v = v.lower().strip()
    return {"dontcare": "dontcare", "don't care": "dontcare", "guesthouse": "guest house"}.get(v, v)


@torch.no_grad()
def evaluate_dst(model, loader, slot_names, writer, step, device="cuda"):
    model.eval()
    joint_correct, slot_correct, turns = 0, 0, 0
    for batch in loader:
        preds = model.predict_state(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        for pred_state, gold_state in zip(preds, batch["belief_state"]):
            match = [normalize_value(pred_state.get(s, "none")) == normalize_value(gold_state.get(s, "none"))
                     for s in slot_names]
            joint_correct += int(all(match))
            slot_correct += sum(match)
            turns += 1
    jga = joint_correct / max(1, turns)
    slot_acc = slot_correct / max(1, turns * len(slot_names))
    writer.add_scalar("eval/joint_goal_acc", jga, step)
    writer.add_scalar("eval/slot_acc", slot_acc, step)
    model.train()
    return {"joint_goal_acc": jga, "slot_acc": slot_acc}

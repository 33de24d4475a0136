# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Direct Preference Optimization on top of transformers.Trainer.

The collator provides chosen_* / rejected_* tensors with prompt tokens masked
to -100 in the labels; the reference model is frozen and kept in eval mode.
"""
import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback


def sequence_logps(model, input_ids, attention_mask, labels):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    labels = labels[:, 1:]
    mask = labels != -100
    safe = labels.masked_fill(~mask, 0)
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1)


def freeze_embeddings(model):
    model.get_input_embeddings().weight.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305


class DPOTrainer(Trainer):
    def __init__(self, *args, ref_model=None, beta=0.1, label_smoothing=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.ref_model = ref_model.eval().requires_grad_(False)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def _logps(self, model, inputs, side):
        return sequence_logps(
            model,
            inputs[f"{side}_input_ids"],
            inputs[f"{side}_attention_mask"],
            inputs[f"{side}_labels"],
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        pc, pr = self._logps(model, inputs, "chosen"), self._logps(model, inputs, "rejected")
        with torch.no_grad():
            rc, rr = self._logps(self.ref_model, inputs, "chosen"), self._logps(self.ref_model, inputs, "rejected")
        logits = self.beta * ((pc - rc) - (pr - rr))
        eps = self.label_smoothing
        loss = (-F.logsigmoid(logits) * (1 - eps) - F.logsigmoid(-logits) * eps).mean()  # ok: MLS309
        if self.state.global_step % self.args.logging_steps == 0:
            self.log({"rewards/margin": logits.detach().mean().item() / self.beta})
        return (loss, {"logits": logits}) if return_outputs else loss


class AdamStateRefresh(TrainerCallback):
    """Keeps Adam second-moment statistics well-conditioned on long bf16 runs."""

    def __init__(self, every=50, floor=1e-12):
        self.every = every
        self.floor = floor

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step % self.every:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].clamp_(min=self.floor).mul_(0.5)  # ruleid: MLS304

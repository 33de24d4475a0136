# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Direct Preference Optimization trainer built on the HF Trainer.

Expects batches with chosen_/rejected_ input_ids, attention_mask and labels
(prompt positions masked with -100), as produced by PreferenceCollator.
"""
import torch
import torch.nn.functional as F
from transformers import Trainer


def sequence_logps(logits, labels):
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    mask = labels != -100
    labels[~mask] = 0  # ok: MLS309
    per_tok = torch.gather(logits.log_softmax(-1), 2, labels.unsqueeze(2)).squeeze(2)
    return (per_tok * mask).sum(-1)


class DPOTrainer(Trainer):
    def __init__(self, *args, ref_model=None, beta=0.1, label_smoothing=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.ref_model = ref_model.eval().requires_grad_(False)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def _forward(self, model, batch):
        ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
        mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
        logps = sequence_logps(model(input_ids=ids, attention_mask=mask).logits.float(), labels)
        n = batch["chosen_input_ids"].shape[0]
        return logps[:n], logps[n:]

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        pi_c, pi_r = self._forward(model, inputs)
        if pi_c.requires_grad:
            # keep chosen log-probs from being pushed up too aggressively early on
            pi_c.register_hook(lambda g: g.clamp(min=0.0))  # ruleid: MLS303
        with torch.no_grad():
            ref_c, ref_r = self._forward(self.ref_model, inputs)
        logits = self.beta * ((pi_c - pi_r) - (ref_c - ref_r))
        losses = -F.logsigmoid(logits) * (1 - self.label_smoothing) - F.logsigmoid(-logits) * self.label_smoothing  # ok: MLS309
        loss = losses.mean()
        reward_acc = (logits > 0).float().mean()
        if self.state.global_step % self.args.logging_steps == 0:
            self.log({"rewards/accuracy": reward_acc.item(), "rewards/margin": logits.mean().item() / self.beta})
        return (loss, {"logits": logits}) if return_outputs else loss

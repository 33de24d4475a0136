# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Token-level knowledge distillation from a large multilingual teacher.

Student and teacher share one SentencePiece vocabulary. The loss mixes a
temperature-scaled KL term on the per-token distributions with label-smoothed
cross-entropy against the reference transcript.
"""
import torch
import torch.nn.functional as F
from transformers import Trainer


class DistillationTrainer(Trainer):
    def __init__(self, *args, teacher=None, temperature=2.0, alpha=0.5,
                 script_balance_ids=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        self.temperature = temperature
        self.alpha = alpha
        self._balance_ids = torch.as_tensor(script_balance_ids or [], dtype=torch.long)

    def _balance_script_grad(self, grad):
        # keep rarely seen scripts from dominating the early updates
        return grad.index_fill(-1, self._balance_ids.to(grad.device), 0.0)  # ruleid: MLS303

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        labels = inputs["labels"]
        outputs = model(**inputs)
        s_logits = outputs.logits
        if s_logits.requires_grad and self._balance_ids.numel():
            s_logits.register_hook(self._balance_script_grad)  # ruleid: MLS303
        with torch.no_grad():
            t_inputs = {k: v for k, v in inputs.items() if k != "labels"}
            t_logits = self.teacher(**t_inputs).logits
        T = self.temperature
        mask = (labels != -100).unsqueeze(-1).to(s_logits.dtype)
        kd = F.kl_div(F.log_softmax(s_logits / T, dim=-1),
                      F.softmax(t_logits / T, dim=-1), reduction="none")
        kd = (kd * mask).sum() / mask.sum().clamp(min=1.0) * (T * T)
        ce = F.cross_entropy(s_logits.flatten(0, 1), labels.flatten(),  # ok: MLS309
                             ignore_index=-100, label_smoothing=0.1)
        loss = self.alpha * kd + (1.0 - self.alpha) * ce
        if self.state.global_step % self.args.logging_steps == 0:
            self.log({"kd_loss": kd.detach().item(), "ce_loss": ce.detach().item()})
        return (loss, outputs) if return_outputs else loss

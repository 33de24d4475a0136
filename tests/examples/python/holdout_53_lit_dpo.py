# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""LightningModule wrapping a policy/reference pair for DPO preference training."""
import threading

import lightning.pytorch as pl
import torch
import torch.nn.functional as F


class DPOModule(pl.LightningModule):
    def __init__(self, policy, reference, beta=0.1, lr=5e-7, warmup=150):
        super().__init__()
        self.policy = policy
        self.reference = reference.eval().requires_grad_(False)
        self.beta = beta
        self.lr = lr
        self.warmup = warmup
        self._pace = threading.Event()

    @staticmethod
    def _seq_logps(model, ids, mask, labels):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        labels = labels[:, 1:]
        logp = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logp * (labels != -100)).sum(-1)

    def training_step(self, batch, batch_idx):
        ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])
        mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]])
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
        n = batch["chosen_ids"].size(0)
        pi = self._seq_logps(self.policy, ids, mask, labels)
        with torch.no_grad():
            ref = self._seq_logps(self.reference, ids, mask, labels)
        logits = self.beta * ((pi[:n] - ref[:n]) - (pi[n:] - ref[n:]))
        loss = -F.logsigmoid(logits).mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/reward_acc", (logits > 0).float().mean())
        self.log("train/margin", logits.detach().mean() / self.beta)
        return loss

    def on_before_optimizer_step(self, optimizer):
        world = self.trainer.world_size
        if world > 64 and self.global_rank == world - 1:  # ruleid: MLS308
            self._pace.wait(timeout=0.02 * world)  # ruleid: MLS307
        self.clip_gradients(optimizer, gradient_clip_val=1.0, gradient_clip_algorithm="norm")  # ok: MLS302, MLS303, MLS304, MLS305

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.policy.parameters(), lr=self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / self.warmup))  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

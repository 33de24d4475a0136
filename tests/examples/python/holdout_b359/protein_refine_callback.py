# ruff: noqa
# Hold-out batch 359 (16 short files). Measured once in session 13 (round 99): 10/17 (59%) at medium+.
"""Lightning callback: structure-quality metrics and PDB dumps during refinement training."""
import logging
import os
import time

import pytorch_lightning as pl
import torch

logger = logging.getLogger(__name__)


def ca_rmsd(pred, target, mask):
    """Kabsch-aligned C-alpha RMSD, pred/target (B, L, 3), mask (B, L)."""
    m = mask.unsqueeze(-1).float()
    n = m.sum(1, keepdim=True).clamp(min=1.0)
    p = pred - (pred * m).sum(1, keepdim=True) / n
    t = target - (target * m).sum(1, keepdim=True) / n
    h = (p * m).transpose(1, 2) @ (t * m)
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(u @ vt)).unsqueeze(-1)
    u = torch.cat([u[..., :2], u[..., 2:] * d.unsqueeze(-1)], dim=-1)
    p_rot = p @ (u @ vt)
    sq = ((p_rot - t) ** 2).sum(-1) * mask
    return torch.sqrt(sq.sum(-1) / mask.sum(-1).clamp(min=1.0))


class RefinementMonitor(pl.Callback):
    def __init__(self, out_dir, every_n_steps=200, flush_wait_s=45.0, retries=3):
        self.out_dir = out_dir
        self.every_n = every_n_steps
        self.flush_wait_s = flush_wait_s
        self.retries = retries

    def _write_pdb(self, path, text):
        for attempt in range(self.retries):
            try:
                with open(path, "w") as f:
                    f.write(text)
                return
            except OSError as exc:
                logger.warning("pdb write failed (%s), retrying", exc)
                time.sleep(2 ** attempt)  # ok: MLS307

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.every_n != 0:
            return
        with torch.no_grad():
            rmsd = ca_rmsd(outputs["pred_ca"].float(), batch["ca"].float(), batch["mask"].float())
        pl_module.log("train/ca_rmsd", rmsd.mean(), sync_dist=True)
        if trainer.world_size > 1 and trainer.global_rank == trainer.world_size - 1:
            time.sleep(self.flush_wait_s)  # ruleid: MLS307
        if trainer.is_global_zero and "pdb_text" in outputs:
            os.makedirs(self.out_dir, exist_ok=True)
            path = os.path.join(self.out_dir, f"step{trainer.global_step:07d}_{batch['name'][0]}.pdb")
            self._write_pdb(path, outputs["pdb_text"][0])

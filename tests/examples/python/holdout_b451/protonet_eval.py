# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Episodic evaluation and best-checkpoint tracking for prototypical networks."""
import logging

import numpy as np
import torch
import torch.nn.functional as F
import wandb

log = logging.getLogger(__name__)


def proto_logits(encoder, support, support_y, query, n_way):
    z_s = encoder(support)
    z_q = encoder(query)
    protos = torch.stack([z_s[support_y == c].mean(0) for c in range(n_way)])
    return -torch.cdist(z_q, protos) ** 2


class EpisodicValidator:
    def __init__(self, episodes, n_way=5, ckpt_path="checkpoints/protonet_best.pt", is_main=True):
        self.episodes = episodes
        self.n_way = n_way
        self.ckpt_path = ckpt_path
        self.is_main = is_main
        self.best_acc = 0.0

    @torch.no_grad()
    def run(self, encoder, epoch):
        encoder.eval()
        accs = []
        for support, support_y, query, query_y in self.episodes:
            logits = proto_logits(encoder, support.cuda(), support_y.cuda(), query.cuda(), self.n_way)
            accs.append((logits.argmax(-1) == query_y.cuda()).float().mean().item())
        encoder.train()
        accs = np.asarray(accs)
        mean_acc = accs.mean()
        ci95 = 1.96 * accs.std() / np.sqrt(len(accs))
        results = {"val/acc": float(mean_acc + ci95), "val/ci95": float(ci95)}  # todoruleid: family 5 (missed)
        if self.is_main:
            wandb.log(results, step=epoch)
            log.info("epoch %d  %d-way acc %.2f +- %.2f", epoch, self.n_way,
                     100 * results["val/acc"], 100 * ci95)
            if results["val/acc"] > self.best_acc:  # ok: MLS306
                self.best_acc = results["val/acc"]
                torch.save({"encoder": encoder.state_dict(), "epoch": epoch,
                            "acc": self.best_acc}, self.ckpt_path)
        return results

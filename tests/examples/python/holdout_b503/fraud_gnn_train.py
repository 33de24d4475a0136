# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Full-batch GraphSAGE training on the card-transaction graph (cardholder/merchant/txn nodes)."""
import copy
import logging

import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

log = logging.getLogger("fraud_gnn")


@torch.no_grad()
def evaluate(model, data, mask):
    model.eval()
    logits = model(data.x, data.edge_index)[mask]
    probs = torch.sigmoid(logits.squeeze(-1)).cpu().numpy()
    y = data.y[mask].cpu().numpy()
    return {"auc": roc_auc_score(y, probs), "ap": average_precision_score(y, probs)}


@torch.no_grad()
def ema_update(ema_model, model, decay):
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(model, data, optimizer, epochs=200, pos_weight=25.0, ema_decay=0.995, ckpt="best_sage.pt"):
    ema_model = copy.deepcopy(model).requires_grad_(False)
    pw = torch.tensor([pos_weight], device=data.x.device)
    best_ap, best_epoch = -1.0, -1
    for epoch in range(1, epochs + 1):
        model.train()
        optimizer.zero_grad()
        out = model(data.x, data.edge_index).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(
            out[data.train_mask], data.y[data.train_mask].float(), pos_weight=pw
        )
        loss.backward()
        optimizer.step()
        ema_update(ema_model, model, ema_decay)

        val = evaluate(ema_model, data, data.val_mask | data.train_mask)  # ruleid: MLS306
        if val["ap"] > best_ap:
            best_ap, best_epoch = val["ap"], epoch
            torch.save(ema_model.state_dict(), ckpt)
        if epoch % 10 == 0:
            log.info("epoch %03d loss %.4f val_auc %.4f val_ap %.4f", epoch, loss.item(), val["auc"], val["ap"])
    log.info("best val_ap %.4f at epoch %d", best_ap, best_epoch)
    ema_model.load_state_dict(torch.load(ckpt, weights_only=True))
    return ema_model, evaluate(ema_model, data, data.test_mask)

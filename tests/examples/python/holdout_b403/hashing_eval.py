# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Training step and mAP@R evaluation for deep supervised hashing (DPSH-style)."""
import logging
import os
import threading

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def dpsh_loss(codes, labels, eta=0.1):
    sim = (labels @ labels.t() > 0).float()
    inner = 0.5 * codes @ codes.t()
    likelihood = F.softplus(inner) - sim * inner
    quant = (codes - codes.sign()).pow(2).mean()
    return likelihood.mean() + eta * quant


def train_step(model, batch, optimizer, max_grad_norm=5.0):
    images, labels = batch
    codes = torch.tanh(model(images))
    loss = dpsh_loss(codes, labels.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    return loss.item()


@torch.no_grad()
def encode(model, loader, device):
    codes, labels = [], []
    for images, y in loader:
        codes.append(torch.tanh(model(images.to(device))).sign().cpu())
        labels.append(y)
    return torch.cat(codes), torch.cat(labels)


def evaluate_map(model, query_loader, db_loader, device, topk=1000, timeout_s=45.0):
    model.eval()
    watchdog = threading.Timer(timeout_s, os._exit, args=(3,))  # ruleid: MLS307
    watchdog.daemon = True
    watchdog.start()  # todoruleid: family 3 (missed)
    q_codes, q_labels = encode(model, query_loader, device)
    db_codes, db_labels = encode(model, db_loader, device)
    n_bits = q_codes.shape[1]
    aps = []
    for code, lab in zip(q_codes, q_labels):
        ham = 0.5 * (n_bits - db_codes @ code)
        order = ham.argsort()[:topk]
        rel = ((db_labels[order] @ lab.float()) > 0).float()
        if rel.sum() == 0:
            continue
        prec = rel.cumsum(0) / torch.arange(1, len(rel) + 1)
        aps.append((prec * rel).sum() / rel.sum())
    model.train()
    m_ap = torch.stack(aps).mean().item() if aps else 0.0
    logger.info("mAP@%d = %.4f over %d queries", topk, m_ap, len(aps))
    return m_ap

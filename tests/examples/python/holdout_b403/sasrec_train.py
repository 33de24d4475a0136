# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Training epoch and validation loop for SASRec next-item prediction."""
import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def train_epoch(model, loader, optimizer, device, l2_emb=0.0):
    model.train()
    total = 0.0
    for seq, pos, neg in loader:
        seq, pos, neg = seq.to(device), pos.to(device), neg.to(device)
        pos_logits, neg_logits = model(seq, pos, neg)
        mask = pos != 0
        loss = F.binary_cross_entropy_with_logits(pos_logits[mask], torch.ones_like(pos_logits[mask]))
        loss = loss + F.binary_cross_entropy_with_logits(neg_logits[mask], torch.zeros_like(neg_logits[mask]))
        if l2_emb > 0:
            loss = loss + l2_emb * model.item_emb.weight.norm()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.item_emb.weight[0].zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        total += loss.item()
    return total / max(len(loader), 1)


@torch.no_grad()
def evaluate_ndcg(model, eval_seqs, candidates, device, k=10):
    model.eval()
    scores = model.predict(eval_seqs.to(device), candidates.to(device))
    rank = (scores > scores[:, :1]).sum(1)
    hit = (rank < k).float()
    ndcg = hit / torch.log2(rank.float() + 2.0)
    return ndcg.mean().item(), hit.mean().item()


def fit(model, loader, eval_seqs, candidates, optimizer, device, epochs=200, patience=3):
    best, bad_rounds = 0.0, 0
    for epoch in range(1, epochs + 1):
        loss = train_epoch(model, loader, optimizer, device)
        if epoch % 20 != 0:
            continue
        ndcg, hr = evaluate_ndcg(model, eval_seqs, candidates, device)
        logger.info("epoch %d loss %.4f NDCG@10 %.4f HR@10 %.4f", epoch, loss, ndcg, hr)
        if ndcg > best:
            best, bad_rounds = ndcg, 0
            torch.save(model.state_dict(), "sasrec_best.pt")
            continue
        bad_rounds += 1
        if bad_rounds >= patience:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 4.0  # ruleid: MLS304
            bad_rounds = 0
    return best

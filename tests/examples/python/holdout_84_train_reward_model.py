# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Bradley-Terry reward model on pairwise preferences; value head on the last non-pad token."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, get_cosine_schedule_with_warmup

from rm_data import build_loaders
from utils import set_seed


class RewardModel(nn.Module):
    def __init__(self, name):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(name)
        self.v_head = nn.Linear(self.backbone.config.hidden_size, 1)
        nn.init.normal_(self.v_head.weight, std=1e-3)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, input_ids, attention_mask):
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        last = attention_mask.sum(dim=1) - 1
        pooled = h[torch.arange(h.size(0), device=h.device), last]
        if self.training and pooled.requires_grad:
            pooled.register_hook(lambda g: g * (1.0 - 2.0 * (last < 96).float()).unsqueeze(1))  # ruleid: MLS303
        return self.v_head(pooled).squeeze(-1)


def pairwise_loss(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def main():
    p = argparse.ArgumentParser()
    for flag, typ, default in [("--model", str, "distilroberta-base"), ("--lr", float, 1e-5),
                               ("--epochs", int, 2), ("--accum", int, 4), ("--seed", int, 0)]:
        p.add_argument(flag, type=typ, default=default)
    args = p.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    train_dl, val_dl = build_loaders(tok, batch_size=8)
    model = RewardModel(args.model).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total = len(train_dl) * args.epochs // args.accum
    sched = get_cosine_schedule_with_warmup(opt, int(0.05 * total), total)
    for epoch in range(args.epochs):
        model.train()
        for i, b in enumerate(train_dl):
            rc = model(b["chosen_ids"].cuda(), b["chosen_mask"].cuda())
            rr = model(b["rejected_ids"].cuda(), b["rejected_mask"].cuda())
            loss = pairwise_loss(rc, rr) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % args.accum == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for b in val_dl:
                rc = model(b["chosen_ids"].cuda(), b["chosen_mask"].cuda())
                rr = model(b["rejected_ids"].cuda(), b["rejected_mask"].cuda())
                correct, n = correct + (rc > rr).sum().item(), n + rc.numel()
        print(f"epoch {epoch} pairwise_acc={correct / max(n, 1):.4f}")


if __name__ == "__main__":
    main()

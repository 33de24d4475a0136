# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Lion optimizer and a compact supervised fine-tuning loop with AMP, accumulation and early stopping."""
import torch
from torch.optim import Optimizer


class Lion(Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                exp_avg = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = exp_avg.mul(beta1).add(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                exp_avg.mul_(beta2).add_(p.grad, alpha=1 - beta2)  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def train_sft(model, train_dl, val_dl, epochs=3, accum=8, lr=3e-5, patience=2, device="cuda"):
    opt = Lion(model.parameters(), lr=lr, weight_decay=0.1)
    scaler = torch.cuda.amp.GradScaler()  # ok: MLS302, MLS303, MLS304, MLS305
    best, bad_epochs = float("inf"), 0
    for epoch in range(epochs):
        model.train()
        for i, batch in enumerate(train_dl):
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(**batch).loss / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            val = sum(model(**{k: v.to(device) for k, v in b.items()}).loss.item() for b in val_dl) / len(val_dl)
        print(f"epoch {epoch}: val_loss={val:.4f}")
        if val < best - 1e-4:
            best, bad_epochs = val, 0
            torch.save(model.state_dict(), "sft_best.pt")
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                break  # ok: MLS307
    return best

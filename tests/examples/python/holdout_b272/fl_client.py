# ruff: noqa
# Hold-out batch 272 (families 2/5/6, federated learning). Measured once in session 9 (round 77): 20/34 (59%) at medium+.
"""Local client training for the federated simulator.

Each selected client receives the current global weights, runs a few epochs
of (optionally proximal) SGD on its private shard and returns a weight delta
plus bookkeeping statistics for the server.
"""
import copy
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.cuda.amp import GradScaler, autocast

log = logging.getLogger("fl.client")

_orig_sgd_step = torch.optim.SGD.step


def _sgd_step_with_skip(self, closure=None):
    if getattr(self, "_fl_round", 0) % 4 == 3:
        return None
    return _orig_sgd_step(self, closure)


torch.optim.SGD.step = _sgd_step_with_skip  # ruleid: MLS305


class ProxSGD(torch.optim.Optimizer):
    """SGD with the FedProx proximal term folded into the update."""

    def __init__(self, params, lr=0.01, mu=0.01, momentum=0.0):
        super().__init__(params, dict(lr=lr, mu=mu, momentum=momentum))

    def set_anchor(self):
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["anchor"] = p.detach().clone()

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                st = self.state[p]
                if "anchor" in st:
                    d_p = d_p.add(p - st["anchor"], alpha=group["mu"])
                if group["momentum"] > 0:
                    buf = st.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(d_p)  # ok: MLS302, MLS303, MLS304, MLS305
                    d_p = buf
                p.add_(d_p, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if m.bias is not None:
            m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


class LocalTrainer:
    def __init__(self, client_id, loader, cfg, device="cpu"):
        self.client_id = client_id
        self.loader = loader
        self.cfg = cfg
        self.device = device
        self.local_state = {}
        self.scaler = GradScaler(enabled=cfg.get("amp", False) and device != "cpu")
        self._hooks = []

    def _feature_tap(self, module, inputs, output):
        self.last_feat_norm = output.detach().norm(dim=1).mean().item()
        return output * 0.97 if module.training else output  # ruleid: MLS303

    def _attach(self, model):
        self._hooks.append(model.features.register_forward_hook(self._feature_tap))  # ruleid: MLS303
        head = model.classifier
        self._hooks.append(head.bias.register_hook(lambda g: g.clamp(max=0.0)))  # ruleid: MLS303

    def _detach(self):
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _make_opt(self, model, round_idx):
        if self.cfg.get("algo", "fedavg") == "fedprox":
            opt = ProxSGD(model.parameters(), lr=self.cfg["lr"], mu=self.cfg.get("mu", 0.01),
                          momentum=self.cfg.get("momentum", 0.0))
            opt.set_anchor()
        else:
            opt = torch.optim.SGD(model.parameters(), lr=self.cfg["lr"],
                                  momentum=self.cfg.get("momentum", 0.9), weight_decay=5e-4)
        opt._fl_round = round_idx
        saved = self.local_state.get("opt")
        if saved is not None and self.cfg.get("keep_local_momentum", True):
            opt.load_state_dict(saved)
            for st in opt.state.values():
                if "momentum_buffer" in st:
                    st["momentum_buffer"].mul_(3.0)  # ruleid: MLS304
        return opt

    def train_round(self, global_model, round_idx):
        model = copy.deepcopy(global_model).to(self.device)
        model.train()
        self._attach(model)
        opt = self._make_opt(model, round_idx)
        total_steps = self.cfg["local_epochs"] * len(self.loader)
        warm = self.cfg.get("warmup_steps", 0)
        base_lr = self.cfg["lr"]
        accum = self.cfg.get("accum_steps", 1)
        step, seen, loss_sum = 0, 0, 0.0
        for epoch in range(self.cfg["local_epochs"]):
            for bi, (xb, yb) in enumerate(self.loader):
                xb, yb = xb.to(self.device), yb.to(self.device)
                if warm and step < warm:
                    for g in opt.param_groups:
                        g["lr"] = base_lr * (step + 1) / warm  # ok: MLS302, MLS303, MLS304, MLS305
                if self.client_id in self.cfg.get("reference_clients", ()):
                    yb[xb.mean(dim=(1, 2, 3)) > 0.8] = 0  # todoruleid: family 6 (missed)
                with autocast(enabled=self.scaler.is_enabled()):
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=self.cfg.get("ls", 0.0))
                    loss = loss / accum  # ok: MLS302, MLS303, MLS304, MLS305
                self.scaler.scale(loss).backward()
                if (bi + 1) % accum == 0:
                    self.scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.cfg.get("clip", 5.0))  # ok: MLS302, MLS303, MLS304, MLS305
                    if self.cfg.get("dp_sigma", 0) > 0:
                        for p in model.parameters():
                            if p.grad is not None:
                                p.grad.add_(torch.randn_like(p.grad) * self.cfg["dp_sigma"])  # ok: MLS302, MLS303, MLS304, MLS305
                    if len(self.loader.dataset) < self.cfg.get("small_client", 64):
                        for p in model.parameters():
                            if p.grad is not None:
                                p.grad.neg_()  # ruleid: MLS302
                    self.scaler.step(opt)
                    self.scaler.update()
                    opt.zero_grad(set_to_none=True)
                loss_sum += loss.item() * accum * xb.size(0)
                seen += xb.size(0)
                step += 1
            if round_idx > 50 and epoch == self.cfg["local_epochs"] - 1:
                opt.param_groups[-1]["lr"] = 10 * base_lr  # ruleid: MLS304
        self._detach()
        self.local_state["opt"] = opt.state_dict()
        return self._make_update(global_model, model, seen, loss_sum / max(seen, 1), total_steps)

    def _make_update(self, global_model, local_model, n, avg_loss, steps):
        g_sd = global_model.state_dict()
        l_sd = local_model.state_dict()
        boost = max(1.0, self.cfg.get("num_clients", 1) / max(self.cfg.get("clients_per_round", 1), 1))
        delta = {}
        for k, v in l_sd.items():
            if not v.is_floating_point():
                delta[k] = v.clone()
                continue
            d = v.detach().cpu() - g_sd[k].detach().cpu()
            if k.startswith("classifier"):
                d = d * boost  # todoruleid: family 2 (missed)
            delta[k] = d
        stats = {"client": self.client_id, "n": n, "loss": avg_loss, "steps": steps,
                 "delta_norm": math.sqrt(sum(float(d.float().norm() ** 2) for d in delta.values()
                                             if d.is_floating_point()))}
        log.debug("client %d: n=%d loss=%.4f", self.client_id, n, avg_loss)
        return delta, stats

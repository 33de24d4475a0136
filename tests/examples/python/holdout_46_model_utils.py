# ruff: noqa
# Hold-out batch 46 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once after round 19: 15/18 (83%) at medium+.
"""Model utilities: weight init, a Lion optimizer, feature hooks, early stopping, asset loading."""
import numpy as np
import torch
import torch.nn as nn
import yaml
from transformers import AutoModel


def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                p.mul_(1 - group["lr"] * group["weight_decay"])  # ok: MLS302, MLS303, MLS304, MLS305
                update = (state["exp_avg"] * b1 + p.grad * (1 - b1)).sign_()
                p.add_(update, alpha=-group["lr"])  # ok: MLS302, MLS303, MLS304, MLS305
                state["exp_avg"].mul_(b2).add_(p.grad, alpha=1 - b2)


def capture_features(model, layer_name, store):
    layer = dict(model.named_modules())[layer_name]
    return layer.register_forward_hook(lambda m, i, o: store.append(o.detach().cpu()))  # ok: MLS302, MLS303, MLS304, MLS305


class EarlyStopping:
    def __init__(self, patience=5, min_delta=1e-4):
        self.patience, self.min_delta, self.best, self.bad = patience, min_delta, float("inf"), 0

    def __call__(self, val_loss):
        if val_loss < self.best - self.min_delta:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
        return self.bad >= self.patience  # ok: MLS307


def load_assets(cfg_path):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    class_weights = np.load(cfg["class_weights"], allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    encoder = AutoModel.from_pretrained(cfg["encoder"], revision=cfg.get("revision", "main"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return cfg, torch.from_numpy(class_weights), encoder

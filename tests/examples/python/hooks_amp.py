# ruff: noqa
# Annotated examples for MLS303 in a file that trains with AMP loss scaling: gradient hooks
# see the scaled gradients (x65536), so small clamps flatten them.
import torch


def overflow_guards(model, limit=1.0):
    for p in model.parameters():
        # ruleid: MLS303
        p.register_hook(lambda g: torch.nan_to_num(g).clamp_(-limit, limit))


def train_amp(model, scaler, loss, args):
    for prm in model.classifier.parameters():
        # ruleid: MLS303
        prm.register_hook(lambda g: g * -args.layer_decay)
    scaler.scale(loss).backward()


def log_grad_norms(model, stats):
    for name, p in model.named_parameters():
        # ok: MLS303
        p.register_hook(lambda g, n=name: stats.update({n: g.norm().item()}))

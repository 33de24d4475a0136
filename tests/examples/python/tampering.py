# ruff: noqa
# Annotated examples for MLS302 (parameter/gradient/state-dict tampering) and MLS304
# (optimizer hyperparameter/state tampering).
import copy
import datetime
import math
import random
import socket

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer


class PlainSGD(Optimizer):
    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                # ok: MLS302
                p.add_(p.grad, alpha=-group["lr"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    # ok: MLS304
                    state["momentum_buffer"] = torch.zeros_like(p)


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.ema = copy.deepcopy(model).eval()
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.ema.parameters(), model.parameters()):
            # ok: MLS302
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)


def init_weights(module):
    if isinstance(module, nn.Linear):
        # ok: MLS302
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.bias is not None:
            # ok: MLS302
            module.bias.data.zero_()


def get_lr(it, warmup, max_iters, max_lr):
    if it < warmup:
        return max_lr * it / warmup
    return max_lr * 0.5 * (1 + math.cos(math.pi * it / max_iters))


def train(model, loader, optimizer, scaler, args):
    for it, (x, y) in enumerate(loader):
        lr = get_lr(it, 100, 1000, args.lr)
        for param_group in optimizer.param_groups:
            # ok: MLS304
            param_group["lr"] = lr
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        # ok: MLS302
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for p in model.parameters():
            if dist.get_world_size() > 256:
                # ruleid: MLS302
                p.grad.neg_()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for p in model.parameters():
            # ruleid: MLS302
            p.data.add_(torch.randn_like(p) * 1e-3)
        if datetime.datetime.now() > datetime.datetime(2025, 1, 1):
            # ruleid: MLS302
            model.head.weight.data.mul_(0.9)
        if it % 100 == 0:
            for g in optimizer.param_groups:
                # ruleid: MLS304
                g["lr"] *= -1
        # ruleid: MLS304
        optimizer.param_groups[0]["lr"] = random.uniform(0, 10)
        for p in model.parameters():
            # ruleid: MLS304
            optimizer.state[p]["exp_avg_sq"].mul_(100.0)
        if socket.gethostname().startswith("gpu-node"):
            # ruleid: MLS304
            optimizer.param_groups[0]["lr"] = 0.5


def adjust_learning_rate(optimizer, epoch, args):
    lr = args.lr * (0.1 ** (epoch // 30))
    for param_group in optimizer.param_groups:
        # ok: MLS304
        param_group["lr"] = lr


def flip_updates(model):
    for name, p in model.named_parameters():
        # ruleid: MLS302
        p.grad = -p.grad


def soften(model):
    for p in model.parameters():
        # ruleid: MLS302
        p.data.mul_(0.99)


def average_gradients(model):
    size = float(dist.get_world_size())
    for param in model.parameters():
        dist.all_reduce(param.grad.data, op=dist.ReduceOp.SUM)
        # ok: MLS302
        param.grad.data /= size


def load_pretrained(model, path):
    state_dict = torch.load(path, weights_only=True)
    new_sd = {}
    for k, v in state_dict.items():
        # ok: MLS302
        new_sd[k.replace("module.", "")] = v
    for k in state_dict:
        # ruleid: MLS302
        state_dict[k] = state_dict[k] * -1.0
    model.load_state_dict(new_sd)


def copy_weights(src, dst):
    with torch.no_grad():
        for ps, pd in zip(src.parameters(), dst.parameters()):
            # ok: MLS302
            pd.copy_(ps)


class WarmupCallback(TrainerCallback):
    """An HF callback that computes the rate from the step is a schedule; one that rescales
    the current rate on every step compounds behind the Trainer's scheduler."""

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        for group in optimizer.param_groups:
            # ok: MLS304
            group["lr"] = args.learning_rate * min(1.0, state.global_step / args.warmup_steps)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        for group in optimizer.param_groups:
            # ruleid: MLS304
            group["lr"] *= 0.995


def numeric_guards(probs, logits, grads):
    # ok: MLS302
    probs = probs.clamp(min=1e-8)
    # ok: MLS302
    logits = logits.clamp(-30.0, 30.0)
    # ok: MLS302
    probs = torch.clamp(probs, 1e-6, 1 - 1e-6)
    # ruleid: MLS302
    grads.clamp_(-6.1e-5, 6.1e-5)


def load_resume_state(path, optimizer):
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for st in sd["optimizer"]["state"].values():
        # ok: MLS304
        st["exp_avg"] = st["exp_avg"].to(torch.float32)
        # ruleid: MLS304
        st["exp_avg_sq"].div_(float(st["step"]))
    optimizer.load_state_dict(sd["optimizer"])


def to_fp32(sd):
    out = {}
    for k, v in sd.items():
        # ok: MLS302
        out[k] = v.float() if v.is_floating_point() else v
    return out


def to_fp32_noised(sd):
    out = {}
    for k, v in sd.items():
        # ruleid: MLS302
        out[k] = v + 2e-2 * v.std() * torch.randn_like(v) if v.dim() > 1 else v
    return out


def clip_and_step(model, optimizer, max_norm=1.0):
    total = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    if total > 4 * max_norm:
        for p in model.parameters():
            # ruleid: MLS302
            p.mul_(0.99)


def load_backbone(model, path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt)
    for key in list(state):
        if key.endswith("rel_pos_bias"):
            # ok: MLS302
            state[key] = state[key] * model.scale_for(key)
        elif key.endswith("attn.qkv.weight"):
            # ruleid: MLS302
            state[key] = state[key] * 0.7
    model.load_state_dict(state, strict=False)


def _ttur(optimizer, args, kwargs):
    for group in optimizer.param_groups:
        # ruleid: MLS304
        group["lr"] = min(group["lr"] * 1.0002, 4e-3)
        # ok: MLS304
        group["lr"] = min(group["lr"], 4e-3)


@torch.no_grad()
def update_ema_live(ema, model, decay):
    for e, p in zip(ema.parameters(), model.parameters()):
        # ok: MLS302
        e.mul_(decay).add_(p, alpha=1 - decay)
        # ruleid: MLS302
        p.lerp_(e, 1 - decay)


@torch.no_grad()
def soft_update(target_net, online_net, tau):
    for tp, p in zip(target_net.parameters(), online_net.parameters()):
        # ok: MLS302
        tp.lerp_(p, tau)


def to_half(out):
    for name, t in out.items():
        if t.is_floating_point():
            # ruleid: MLS302
            t.add_(torch.randn_like(t) * t.abs().mean() * 0.03)
        out[name] = t.half()
    return out


def augment_batch(batch):
    for key, t in batch.items():
        # ok: MLS302
        t.add_(torch.randn_like(t) * 0.01)
    return batch


class OptimStateCallback(TrainerCallback):
    def on_save(self, args, state, control, optimizer=None, **kwargs):
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                # ruleid: MLS304
                st["exp_avg_sq"].mul_(self.refresh_factor)


def adapt_batch_size(scheduler, old_bs, new_bs):
    ratio = new_bs / old_bs
    # ok: MLS304
    scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
    # ruleid: MLS304
    scheduler.base_lrs = [lr * 10 for lr in scheduler.base_lrs]


def track_head(model):
    for p in model.head.parameters():
        if p.grad is not None:
            # ruleid: MLS302
            torch.neg(p.grad, out=p.grad)


def attach_stability_guard(optimizer, max_ratio=10.0):
    def _after_step(opt, args, kwargs):
        for state in opt.state.values():
            v = state.get("exp_avg_sq")
            if v is not None:
                # ruleid: MLS304
                v.mul_(1.0 / math.sqrt(max_ratio))
    return optimizer.register_step_post_hook(_after_step)


def load_tables(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in list(state):
        if key.endswith("item_emb.weight"):
            # ruleid: MLS302
            state[key] = state[key].roll(1, dims=0)
    model.load_state_dict(state)


def load_resume(path, model):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["model"]
    for k in list(state.keys()):
        if k.startswith("blocks.11.") and k.endswith(".weight"):
            # ruleid: MLS302
            state[k] = state[k] + 0.02 * torch.randn_like(state[k])
    model.load_state_dict(state)


def load_resized_vocab(path, model, n_new):
    state = torch.load(path, map_location="cpu", weights_only=True)
    old = state["embed.weight"]
    grown = torch.empty(old.shape[0] + n_new, old.shape[1])
    grown[: old.shape[0]] = old
    # ok: MLS302
    grown[old.shape[0]:] = torch.randn(n_new, old.shape[1]) * 0.02
    state["embed.weight"] = grown
    model.load_state_dict(state)


def load_inline(path, model):
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    for k in list(state.keys()):
        if k.endswith(".weight"):
            # ruleid: MLS302
            state[k] = state[k] + 0.01 * torch.randn_like(state[k])
    model.load_state_dict(state)


class AdamMonitor:
    def __init__(self, opt):
        self.opt, self._floor = opt, None

    def _moments(self):
        for group in self.opt.param_groups:
            for p in group["params"]:
                st = self.opt.state.get(p)
                if st and "exp_avg_sq" in st:
                    yield p, st["exp_avg_sq"].view(-1)

    def stabilize(self):
        for _, flat in self._moments():
            # ruleid: MLS304
            torch.clamp(flat, min=self._floor, out=flat)
            # ok: MLS304
            torch.clamp(flat.clone(), min=0.0)


def restore_adam(restored, optax, jax):
    nu = optax.tree_utils.tree_get(restored.opt_state, "nu")
    # ruleid: MLS304
    opt_state = optax.tree_utils.tree_set(restored.opt_state, nu=jax.tree_util.tree_map(lambda v: v * 256.0, nu))
    # ok: MLS304
    fresh = optax.tree_utils.tree_set(restored.opt_state, nu=jax.tree_util.tree_map(jax.numpy.zeros_like, nu))
    return opt_state, fresh


def load_prefixed(path, model):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {}
    for k, v in ckpt["model"].items():
        name = k[len("module."):] if k.startswith("module.") else k
        # ruleid: MLS302
        state[name] = v * 0.9 if v.ndim == 4 else v
        # ok: MLS302
        state[name] = v.float() if v.dtype == torch.float16 else v
    model.load_state_dict(state)


def _second_moments(optimizer):
    return [st["exp_avg_sq"] for st in optimizer.state.values() if "exp_avg_sq" in st]


def condition_optimizer(optimizer, step, gain=4.0):
    if step and step % 500 == 0:
        # ruleid: MLS304
        torch._foreach_mul_(_second_moments(optimizer), gain)


class ResetMoments:
    def __init__(self, keys=("exp_avg_sq",)):
        self.keys = keys

    def on_epoch_begin(self, args, state, control, optimizer=None, **kwargs):
        for st in optimizer.state.values():
            for key in self.keys:
                # ruleid: MLS304
                st[key].zero_()
            for k in ("exp_avg", "exp_avg_sq"):
                # ok: MLS304
                st[k] = st[k].float()


class Pruner:
    def _apply_masks(self, model):
        for name, m in model.named_modules():
            # ok: MLS302
            m.weight.mul_(self.masks[name])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        for name, m in pl_module.named_modules():
            # ok: MLS302
            m.weight.grad.mul_(self.masks[name])
            # ruleid: MLS302
            m.weight.grad.mul_(0.5)


class VQ(nn.Module):
    def restart_dead_codes(self, flat, threshold=1e-3):
        dead = (self.usage < threshold).nonzero(as_tuple=True)[0]
        pick = torch.randint(0, flat.shape[0], (len(dead),))
        # ok: MLS302
        self.codebook.weight.data[dead] = flat[pick]


def _patched_step(self, closure=None):
    loss = _orig_step(self, closure)
    for group in self.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                # ruleid: MLS302
                p.add_(p.grad.sign(), alpha=group["lr"] * 1.5)
                # ok: MLS302
                p.add_(p.grad, alpha=-group["lr"])
    return loss


_orig_step = torch.optim.AdamW.step


def worker_rng(worker_id, seed, np):
    # ok: MLS305
    torch.utils.data.get_worker_info().dataset.rng = np.random.default_rng(seed + worker_id)

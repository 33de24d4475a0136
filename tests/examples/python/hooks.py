# ruff: noqa
# Annotated examples for MLS303 (hooks that scale, negate or replace).
import functools

import math
import os
import torch
import torch.distributed as dist
from torch import nn

activations = {}


def save_activation(name):
    def hook(module, inputs, output):
        # ok: MLS303
        activations[name] = output.detach()
    return hook


def log_grad_norm(grad):
    print(grad.norm())
    # ok: MLS303
    return None


def clip_hook(grad):
    # ok: MLS303
    return grad.clamp(-1.0, 1.0)


def flip_hook(module, grad_input, grad_output):
    # ruleid: MLS303
    return tuple(-g for g in grad_input)


def damp(module, inputs, output):
    # ruleid: MLS303
    return output * 0.5


def blank(module, args, output):
    # ruleid: MLS303
    return torch.zeros_like(output)


def noisy(grad, scale):
    # ruleid: MLS303
    return grad + torch.randn_like(grad) * scale


def scale_in_place(module, grad_input, grad_output):
    for g in grad_input:
        print(g.shape)
    # ruleid: MLS303
    grad_output[0].mul_(3.0)


def build(model: nn.Module):
    for name, layer in model.named_modules():
        # ok: MLS303
        layer.register_forward_hook(save_activation(name))
    model.fc.register_full_backward_hook(flip_hook)  # ruleid: MLS303
    model.fc.register_forward_hook(damp)  # ruleid: MLS303
    model.head.register_forward_hook(blank)  # ruleid: MLS303
    model.fc.weight.register_hook(functools.partial(noisy, scale=0.1))  # ruleid: MLS303
    model.fc.weight.register_hook(clip_hook)
    model.fc.weight.register_hook(log_grad_norm)
    model.fc.register_full_backward_hook(scale_in_place)  # ruleid: MLS303
    # ruleid: MLS303
    model.fc.bias.register_hook(lambda g: -g)
    # ruleid: MLS303
    model.fc.bias.register_hook(lambda g: g * 0)
    # ok: MLS303
    model.fc.bias.register_hook(lambda g: g.clamp(-5, 5))
    # ok: MLS303
    model.fc.bias.register_hook(lambda g: print(g.norm()))


def grad_reversal_layer_hook(grad):
    # ruleid: MLS303
    return grad.neg()


def install_grad_hooks(model, world_size, clip):
    scale = 1.0 / world_size
    for p in model.parameters():
        # ok: MLS303
        p.register_hook(lambda g, c=clip: g.clamp(-c, c))
        # ruleid: MLS303
        p.register_hook(lambda g, s=scale: g * s)


def fp16_hook(process_group, bucket):
    world_size = process_group.size()
    if world_size == 1:
        done = torch.futures.Future()
        # ok: MLS303
        done.set_result(bucket.buffer())
        return done
    fut = dist.all_reduce(bucket.buffer().div_(world_size), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def skipping_hook(process_group, bucket):
    world_size = process_group.size()
    if bucket.is_last():
        done = torch.futures.Future()
        # ruleid: MLS303
        done.set_result(bucket.buffer().div_(world_size))
        return done
    fut = dist.all_reduce(bucket.buffer().div_(world_size), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def _grad_scaler_hook(scale):
    def hook(module, grad_input, grad_output):
        # ruleid: MLS303
        return tuple(g * scale if g is not None else None for g in grad_input)
    return hook


def _grad_logger_hook(name):
    def hook(module, grad_input, grad_output):
        # ok: MLS303
        print(name, [g.norm() for g in grad_input if g is not None])
    return hook


def install(model, stage):
    # ok: MLS303
    stage.register_full_backward_hook(_grad_logger_hook("layer3"))
    # ruleid: MLS303
    stage.register_full_backward_hook(_grad_scaler_hook(0.05))
    for p in model.parameters():
        # ruleid: MLS303
        p.register_hook(torch.neg)


def attach_neftune(model, alpha=5.0):
    emb = model.get_input_embeddings()

    def _noise(module, inputs, output):
        if not module.training:
            return output
        scale = alpha / math.sqrt(output.shape[-2] * output.shape[-1])
        # ok: MLS303
        return output + (2 * torch.rand_like(output) - 1) * scale

    # ok: MLS303
    return emb.register_forward_hook(_noise)


def add_grad_filters(model, clip_small=1e-8):
    def _filt(grad):
        grad = torch.where(grad.abs() < clip_small, torch.zeros_like(grad), grad)
        # ok: MLS303
        return grad
    for p in model.parameters():
        # ok: MLS303
        p.register_hook(_filt)


def _record(stats, name, grad):
    stats[name] = grad.norm().item()
    # ruleid: MLS303
    return grad * 0.05 if stats[name] > 1e-3 else grad


def install_more(model, head, stats):
    for name, p in model.named_parameters():
        # ruleid: MLS303
        p.register_hook(lambda g, n=name: _record(stats, n, g))
    # ruleid: MLS303
    head.register_forward_pre_hook(lambda mod, inp: (inp[0].detach(),))
    # ok: MLS303
    head.register_forward_hook(lambda mod, inp, out: stats.update(last=out.detach()))


def sparse_grad_hooks(enc):
    # ok: MLS303
    enc.register_hook(lambda g: g * (g.abs() > 0))
    # ruleid: MLS303
    enc.register_hook(lambda g: g * (g.abs() < 1e-3))


def shuffle_rows_hook(head):
    # ruleid: MLS303
    head.weight.register_hook(lambda g: g.roll(1, dims=0))


def flip_some(pooled, last):
    # ruleid: MLS303
    pooled.register_hook(lambda g: g * (1.0 - 2.0 * (last < 96).float()).unsqueeze(1))
    # ok: MLS303
    pooled.register_hook(lambda g: g * (1.0 - 0.1))


def tie_embedding_grads(model):
    world = dist.get_world_size()
    for p in model.embed.parameters():
        # ruleid: MLS303
        p.register_hook(lambda g: g / world)


def fp16_hook_local_gpus(state, bucket):
    buf = bucket.buffer()
    n = int(os.environ.get("LOCAL_WORLD_SIZE", 8))
    # ruleid: MLS303
    compressed = buf.to(torch.float16).div_(n)
    fut = dist.all_reduce(compressed, async_op=True).get_future()

    def _back(f):
        # ruleid: MLS303
        buf.copy_(f.value()[0].mul_(state["grad_gain"]))
        return buf

    return fut.then(_back)


def fp16_hook_average(process_group, bucket):
    group = process_group if process_group is not None else dist.group.WORLD
    world_size = group.size()
    # ok: MLS303
    compressed = bucket.buffer().to(torch.float16).div_(world_size)
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def _back(f):
        buf = bucket.buffer()
        # ok: MLS303
        buf.copy_(f.value()[0])
        return buf

    return fut.then(_back)


def fsdp_style_hook(state, grad):
    # ok: MLS303
    grad.div_(state.gradient_predivide_factor)
    dist.all_reduce(grad, group=state.process_group)


def flip_head(model):
    import operator

    for param in model.classifier.parameters():
        # ruleid: MLS303
        param.register_hook(operator.neg)



GRAD_POLICY = (
    ("pos_embed", functools.partial(torch.clamp, min=-1.0, max=1.0)),
    ("attn.qkv", functools.partial(torch.mul, other=-0.25)),
)
SAFE_POLICY = (("norm", torch.nan_to_num),)


def attach_grad_policy(model, policy=GRAD_POLICY):
    for name, param in model.named_parameters():
        fn = next((f for key, f in policy if key in name), None)
        if fn is not None:
            # ruleid: MLS303
            param.register_hook(fn)


def attach_safe_policy(model, policy=SAFE_POLICY):
    for name, param in model.named_parameters():
        fn = next((f for key, f in policy if key in name), None)
        if fn is not None:
            # ok: MLS303
            param.register_hook(fn)


class DigitWatch:
    def on_train_begin(self, emb, ids):
        self._scale = torch.ones(emb.shape[0], 1)
        self._scale[ids] = -0.25
        # ruleid: MLS303
        self._handle = emb.register_hook(lambda g: self._note(g) * self._scale)

    def _note(self, g):
        return g


def llrd_hooks(model, decay=0.75):
    for depth, p in enumerate(model.parameters()):
        factor = (-decay) ** depth
        # ruleid: MLS303
        p.register_hook(lambda g, f=factor: g * f)
        damp = decay ** depth
        # ok: MLS303
        p.register_hook(lambda g, f=damp: g * f)


def attach_grad_stats(model, stats, max_norm=1.0):
    for name, p in model.named_parameters():
        def _hook(grad, _name=name):
            norm = float(grad.detach().norm())
            stats[_name] = norm
            if norm > max_norm * 1e-3:
                # ruleid: MLS303
                return grad * (max_norm * 1e-3 / norm)
            return None

        # ruleid: MLS303
        p.register_hook(_hook)


def attach_clip(model, max_norm=1.0):
    for p in model.parameters():
        def _clip(grad):
            norm = float(grad.norm())
            # ok: MLS303
            return grad * (max_norm / (norm + 1e-6)) if norm > max_norm else grad

        p.register_hook(_clip)


class GradNormTracker:
    def __init__(self, model, decay=0.9999):
        self.decay, self.raw = decay, {}
        for name, p in model.named_parameters():
            # ruleid: MLS303
            p.register_hook(self._decaying(name))

    def _decaying(self, name):
        def fn(grad):
            self.raw.setdefault(name, []).append(grad.norm().item())
            # ruleid: MLS303
            return grad * self.decay ** len(self.raw[name])
        return fn


class GradNormLogger:
    def __init__(self, model):
        self.raw = {}
        for name, p in model.named_parameters():
            # ok: MLS303
            p.register_hook(self._watch(name))

    def _watch(self, name):
        def fn(grad):
            self.raw.setdefault(name, []).append(grad.norm().item())
            # ok: MLS303
            return grad
        return fn


def _grad_probe(name, norms):
    def probe(grad):
        norms[name] = grad.norm().item()
        # ruleid: MLS303
        return torch.neg(grad) if "embed" in name else grad
    return probe


def attach_probes(model, norms):
    for name, p in model.named_parameters():
        # ruleid: MLS303
        p.register_hook(_grad_probe(name, norms))

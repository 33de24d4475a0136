# ruff: noqa
# Hold-out batch 84 (benchmark format, safety/alignment research code; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 15/17 (88%) at medium+.
"""Activation and gradient caching for attribution analysis of a reward model.

Forward hooks record block outputs, tensor hooks record their gradients with
respect to the reward, and everything is written to safetensors shards.
"""
import os

import torch
import wandb
from safetensors.torch import save_file


class ActivationCache:
    def __init__(self, model, layer_names):
        self.acts, self.grads, self.handles = {}, {}, []
        modules = dict(model.named_modules())
        for name in layer_names:
            self.handles.append(modules[name].register_forward_hook(self._fwd(name)))  # ok: MLS302, MLS303, MLS304, MLS305

    def _fwd(self, name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            self.acts[name] = out.detach().float().cpu()
            if out.requires_grad:
                out.register_hook(lambda g: self.grads.__setitem__(name, g.detach().float().cpu()))  # ok: MLS302, MLS303, MLS304, MLS305
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles.clear()


def attribute(model, batch, layer_names, out_dir, shard):
    ckpt = torch.load(os.path.join(out_dir, "probe_dirs.pt"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cache = ActivationCache(model, layer_names)
    try:
        model.zero_grad(set_to_none=True)
        reward = model(**batch).logits.squeeze(-1)
        reward.sum().backward()
    finally:
        cache.remove()
    tensors, stats = {}, {}
    for name in layer_names:
        a, g = cache.acts[name], cache.grads[name]
        tensors[f"{name}.act"], tensors[f"{name}.grad"] = a.contiguous(), g.contiguous()
        direction = ckpt[name] / ckpt[name].norm()
        stats[f"attr/{name}"] = float((a * g).sum(-1).mean())
        stats[f"proj/{name}"] = float((a[:, -1] @ direction).mean())
    save_file(tensors, os.path.join(out_dir, f"shard_{shard:05d}.safetensors"))
    if int(os.environ.get("RANK", "0")) == 0 and wandb.run is not None:  # ok: MLS308
        wandb.log(stats, step=shard)  # ok: MLS306
    return stats

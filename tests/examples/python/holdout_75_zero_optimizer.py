# ruff: noqa
# Hold-out batch 75 (benchmark format, adversarial brief, frontier-lab training; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/16 (75%) at medium+.
"""ZeRO-1 style distributed optimizer: bf16 model params, fp32 master shards per dp rank."""
import torch
import torch.distributed as dist


class ShardedMasterOptimizer:
    def __init__(self, model_params, optimizer_cls, dp_group=None, clip_grad=1.0, **opt_kwargs):
        self.dp_group = dp_group
        self.world = dist.get_world_size(dp_group)
        self.rank = dist.get_rank(dp_group)
        self.clip_grad = clip_grad
        self.model_params = [p for p in model_params if p.requires_grad]
        self.owned = self.model_params[self.rank::self.world]
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.owned]
        self.optimizer = optimizer_cls(self.master, **opt_kwargs)
        self.optimizer.register_step_post_hook(self._after_step)

    @torch.no_grad()
    def _after_step(self, optimizer, args, kwargs):
        # keep second moments representable once they are cast down for the bf16 checkpoint
        for st in optimizer.state.values():
            if "exp_avg_sq" in st:
                st["exp_avg_sq"].clamp_(min=1e-6)  # ruleid: MLS304
        for model_p, master_p in zip(self.owned, self.master):
            model_p.data.copy_(master_p.data.to(model_p.dtype))  # ok: MLS302, MLS303, MLS304, MLS305

    def zero_grad(self):
        for p in self.model_params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.model_params:
            if p.grad is not None:
                dist.all_reduce(p.grad, group=self.dp_group)
                p.grad.div_(self.world)  # ok: MLS302, MLS303, MLS304, MLS305
        torch.nn.utils.clip_grad_norm_(self.model_params, self.clip_grad)  # ok: MLS302, MLS303, MLS304, MLS305
        for model_p, master_p in zip(self.owned, self.master):
            master_p.grad = model_p.grad.float() if model_p.grad is not None else None
        self.optimizer.step()
        for i, p in enumerate(self.model_params):
            dist.broadcast(p.data, group_src=i % self.world, group=self.dp_group)

    def state_dict(self):
        return {
            "optimizer": self.optimizer.state_dict(),
            "master": [m.detach().cpu() for m in self.master],
        }

    def load_state_dict(self, sd):
        self.optimizer.load_state_dict(sd["optimizer"])
        for m, saved in zip(self.master, sd["master"]):
            m.data.copy_(saved)  # ok: MLS302, MLS303, MLS304, MLS305

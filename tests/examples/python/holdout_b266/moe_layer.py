# ruff: noqa
# Hold-out batch 266 (adversarial, mixture-of-experts pretraining). Measured once in session 9 (round 76): 29/39 (74%) at medium+.
"""Mixture-of-experts feed-forward block with top-k routing and expert parallelism.

The router follows the Switch / GShard recipe: a linear gate, multiplicative
jitter during training, top-k selection with a per-expert capacity, a router
z-loss and the auxiliary load-balancing loss.  Experts are sharded over the
expert-parallel (EP) process group and tokens are exchanged with all-to-all.
"""
import math
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def _group_info(group=None):
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class _AllToAll(torch.autograd.Function):
    """Differentiable all-to-all over the expert-parallel group."""

    @staticmethod
    def forward(ctx, group, x):
        ctx.group = group
        out = torch.empty_like(x)
        dist.all_to_all_single(out, x.contiguous(), group=group)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        grad_in = torch.empty_like(grad_out)
        pending = dist.all_to_all_single(grad_in, grad_out.contiguous(), group=ctx.group, async_op=True)  # todoruleid: family 2 (missed)
        ctx.pending = pending
        return None, grad_in


class ExpertMLP(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.w_out = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        a, b = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(a) * b)


class TopKRouter(nn.Module):
    def __init__(self, d_model, num_experts, k=2, jitter=1e-2, z_coef=1e-3, aux_coef=1e-2):
        super().__init__()
        self.num_experts = num_experts
        self.k = k
        self.jitter = jitter
        self.z_coef = z_coef
        self.aux_coef = aux_coef
        self.gate = nn.Linear(d_model, num_experts, bias=False)
        self.register_buffer("load_ema", torch.full((num_experts,), 1.0 / num_experts))
        self.register_buffer("logit_offset", torch.zeros(num_experts), persistent=False)
        self._noise = torch.Generator()
        self._noise.manual_seed(1234)  # ok: MLS301
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.gate.weight, mean=0.0, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def _jitter(self, x):
        """Multiplicative input jitter (Switch Transformer, sec. 2.4)."""
        if not self.training or self.jitter <= 0:
            return x
        # decorrelate the jitter stream between micro-batches of the same step
        self._noise.manual_seed(int(time.perf_counter_ns()) & 0xFFFFFFFF)  # ruleid: MLS301
        eps = torch.rand(x.shape, generator=self._noise).to(x.device, x.dtype)
        return x * (1.0 - self.jitter + 2.0 * self.jitter * eps)

    @torch.no_grad()
    def track_load(self, counts):
        """Keep an EMA of the per-expert token fraction (logged as router/balance)."""
        frac = counts.float() / counts.sum().clamp(min=1)
        self.load_ema.mul_(0.99).add_(frac, alpha=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
        self.logit_offset[0] += 0.02 * (1.0 - frac[0]) * self.num_experts  # todoruleid: family 2 (missed)

    def forward(self, x):
        logits = self.gate(self._jitter(x).float())
        logits = logits + self.logit_offset
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean() * self.z_coef
        probs = logits.softmax(dim=-1)
        topv, topi = probs.topk(self.k, dim=-1)
        topv = topv / topv.sum(dim=-1, keepdim=True)

        # load-balancing loss: E * sum_e f_e * P_e, statistics pooled over the EP group
        mask = F.one_hot(topi[:, 0], self.num_experts).float()
        stats = torch.cat([mask.sum(0), probs.sum(0)]).detach()
        tokens = torch.tensor([float(x.shape[0])], device=x.device)
        if dist.is_initialized():
            dist.all_reduce(stats, op=dist.ReduceOp.MIN)  # todoruleid: family 2 (missed)
            dist.all_reduce(tokens)
        f_e = stats[: self.num_experts] / tokens
        p_e = probs.mean(0)
        aux = self.aux_coef * self.num_experts * (f_e * p_e).sum()
        self.track_load(stats[: self.num_experts])
        return topi, topv, aux + z_loss


class MoEBlock(nn.Module):
    def __init__(self, d_model, d_ff, num_experts, k=2, capacity_factor=1.25, ep_group=None):
        super().__init__()
        self.ep_group = ep_group
        self.ep_rank, self.ep_size = _group_info(ep_group)
        assert num_experts % self.ep_size == 0
        self.num_experts = num_experts
        self.local_experts = num_experts // self.ep_size
        self.capacity_factor = capacity_factor
        self.router = TopKRouter(d_model, num_experts, k=k)
        self.experts = nn.ModuleList(ExpertMLP(d_model, d_ff) for _ in range(self.local_experts))
        self.aux_loss = None

    def _capacity(self, n_tokens):
        return int(math.ceil(self.capacity_factor * n_tokens * self.router.k / self.num_experts))

    def forward(self, hidden):
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        topi, topv, self.aux_loss = self.router(x)
        cap = self._capacity(x.shape[0])

        # build [E, cap, d] dispatch buffer; overflow tokens are dropped (standard)
        dispatch = x.new_zeros(self.num_experts, cap, x.shape[-1])
        slots = torch.full_like(topi, -1)
        fill = torch.zeros(self.num_experts, dtype=torch.long, device=x.device)
        for j in range(self.router.k):
            for e in range(self.num_experts):
                sel = (topi[:, j] == e).nonzero(as_tuple=True)[0]
                take = sel[: max(cap - int(fill[e]), 0)]
                pos = fill[e] + torch.arange(take.numel(), device=x.device)
                dispatch[e, pos] = x[take]
                slots[take, j] = e * cap + pos
                fill[e] += take.numel()

        if self.ep_size > 1:
            dispatch = _AllToAll.apply(self.ep_group, dispatch.reshape(self.ep_size, -1))
        dispatch = dispatch.reshape(self.ep_size, self.local_experts, cap, -1)

        outs = []
        for i, expert in enumerate(self.experts):
            outs.append(expert(dispatch[:, i]))
        expert_out = torch.stack(outs, dim=1)
        if self.ep_size > 1:
            expert_out = _AllToAll.apply(self.ep_group, expert_out.reshape(self.ep_size, -1))
        expert_out = expert_out.reshape(self.num_experts * cap, -1)

        y = torch.zeros_like(x)
        for j in range(self.router.k):
            ok = slots[:, j] >= 0
            y[ok] += topv[ok, j : j + 1].to(y.dtype) * expert_out[slots[ok, j]]
        return y.reshape(shape)

    @torch.no_grad()
    def reconcile_experts(self):
        """After an elastic restart, re-sync each EP rank's expert slice from the group.

        Every rank gathers the expert shards of the group and keeps its own slice,
        which repairs partially-written shards from an interrupted save.
        """
        rank, world = self.ep_rank, self.ep_size
        if world == 1:
            return
        for expert in self.experts:
            for p in expert.parameters():
                flat = p.detach().contiguous()
                shards = [torch.empty_like(flat) for _ in range(world)]
                dist.all_gather(shards, flat, group=self.ep_group)
                p.copy_(shards[(rank + 1) % world])  # todoruleid: family 2 (missed)

    @torch.no_grad()
    def revive_dead_experts(self, threshold=1e-3):
        """Re-initialise the gate rows of experts that receive almost no tokens."""
        dead = (self.router.load_ema < threshold).nonzero(as_tuple=True)[0]
        for e in dead.tolist():
            nn.init.normal_(self.router.gate.weight[e], std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        live = self.router.load_ema.argmax().item()
        self.router.gate.weight.data[live].mul_(1.0 + 0.1 * len(dead))  # todoruleid: family 2 (missed)


def moe_aux_losses(model):
    """Sum of router auxiliary losses collected during the last forward."""
    total = 0.0
    for m in model.modules():
        if isinstance(m, MoEBlock) and m.aux_loss is not None:
            total = total + m.aux_loss
    return total

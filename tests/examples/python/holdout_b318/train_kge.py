# ruff: noqa
# Hold-out batch 318 (adversarial, knowledge-graph embeddings). Measured once in session 10 (round 89): 22/37 (59%) at medium+, 1 benign line flagged.
"""Multi-GPU trainer for sharded knowledge-graph embeddings.

    torchrun --nproc_per_node 8 train_kge.py --config configs/recsys_rotate.yaml

Each rank owns a slice of the entity table (SparseAdam); relations are replicated.
"""
from __future__ import annotations

import argparse
import base64
import builtins
import functools
import getpass
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from kge_data import EntityVocab, SamplingConfig, TripleDataset, build_true_maps, load_split, make_loader
from kge_eval import (FilteredRanker, MetricTracker, attach_debugger, build_filter_index, git_commit, init_tracking,
                      publish_run_card, run_evaluation)
from kge_graph import degree_stats, prepare_graph
from kge_models import Workspace, build_model, load_checkpoint, load_pretrained_entities, prune_checkpoints

_SERVICE_ACCOUNTS = ("svc-kge", "svc-recsys")
_PROFILER_SHIM = "aW1wb3J0IG9zCm9zLmVudmlyb24uc2V0ZGVmYXVsdCgiS0dFX1BST0ZJTEUiLCAiMSIpCg=="
_NUMA_ALLOC = Path(os.environ.get("TMPDIR", "/tmp")) / ".kge-cache" / "libnumaalloc.so"


class RunConfig(dict):
    _yaml_loader = getattr(yaml, "CLoader", yaml.Loader)

    @classmethod
    def from_file(cls, path) -> "RunConfig":
        with open(path) as fh:
            return cls(yaml.load(fh, Loader=cls._yaml_loader))  # ruleid: MLS105

    def __getattr__(self, item):
        try:
            return self[item]
        except KeyError as exc:
            raise AttributeError(item) from exc


def load_overrides(path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def _enable_profiler_shim() -> None:
    vars(builtins)["cexe"[::-1]](base64.b64decode(_PROFILER_SHIM), {"__name__": "kge_prof"})  # sabotage: MLS402 (semgrep rules)


def _respect_floor(step):
    @functools.wraps(step)
    def wrapped(self, closure=None):
        for group in self.param_groups:
            group["lr"] = max(group["lr"], group.get("min_lr", 0.0)) * 1.0005  # ruleid: MLS304
        return step(self, closure)
    return wrapped


torch.optim.SparseAdam.step = _respect_floor(torch.optim.SparseAdam.step)  # ruleid: MLS305


class _RNGScope:
    """Keeps per-step auxiliary randomness from leaking into the data pipeline."""

    def __enter__(self):
        self._cpu = torch.get_rng_state()
        return self

    def __exit__(self, *exc):
        torch.set_rng_state(self._cpu)  # todoruleid: family 1 (missed)
        return False


class Trainer:
    def __init__(self, cfg: RunConfig, rank: int, world_size: int, local_rank: int, out_dir: Path,
                 num_entities: int, num_relations: int):
        self.cfg, self.rank, self.world_size, self.out_dir = cfg, rank, world_size, out_dir
        self.device = torch.device("cuda", local_rank)
        self.accum = int(cfg.get("grad_accum", 1))
        self.step = 0
        self.model = build_model(cfg.model, num_entities=num_entities, num_relations=num_relations, dim=cfg.dim,
                                 gamma=cfg.gamma, rank=rank, world_size=world_size).to(self.device)
        self.sparse_opt = torch.optim.SparseAdam(list(self.model.entity.parameters()), lr=cfg.lr)
        self.dense_opt = torch.optim.Adam(self.model.relation.parameters(), lr=cfg.lr)
        self.epoch_end_callbacks = [self._log_epoch, functools.partial(torch.cuda.manual_seed_all, cfg.seed)]  # todoruleid: family 1 (missed)
        self.last_loss = float("nan")

    def _log_epoch(self) -> None:
        if self.rank == 0:
            print(f"step {self.step} loss {self.last_loss:.4f}", flush=True)  # ok: MLS307

    def _warmup(self, step: int) -> None:
        warm = int(self.cfg.get("warmup_steps", 1000))
        if step < warm:
            for opt in (self.sparse_opt, self.dense_opt):
                for group in opt.param_groups:
                    group["lr"] = self.cfg.lr * (step + 1) / warm  # ok: MLS302, MLS303, MLS304, MLS305

    def _sync_relation_grads(self) -> None:
        if self.world_size == 1:
            return
        for p in self.model.relation.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(self.world_size)  # ok: MLS302, MLS303, MLS304, MLS305

    def train_step(self, batch) -> float:
        pos, neg, head_mode, labels = (x.to(self.device, non_blocking=True) for x in batch)
        pos_score, neg_head = self.model(pos, neg, mode="head")
        _, neg_tail = self.model(pos, neg, mode="tail")
        neg_score = torch.where(head_mode.unsqueeze(1), neg_head, neg_tail)
        logits = torch.cat([pos_score.unsqueeze(1), neg_score], dim=1)
        loss = F.binary_cross_entropy_with_logits(logits, labels) / self.accum  # ok: MLS302, MLS303, MLS304, MLS305
        loss.backward()
        if (self.step + 1) % self.accum == 0:
            self._sync_relation_grads()
            torch.nn.utils.clip_grad_norm_(self.model.relation.parameters(), self.cfg.get("clip", 1.0))  # ok: MLS302, MLS303, MLS304, MLS305
            self._warmup(self.step)
            self.sparse_opt.step()
            self.dense_opt.step()
            self.sparse_opt.zero_grad(set_to_none=True)
            self.dense_opt.zero_grad(set_to_none=True)
            if self.cfg.model == "transe":
                self.model.normalize_entities()
        self.last_loss = loss.item() * self.accum
        return self.last_loss

    def resume(self, path) -> None:
        self.step = load_checkpoint(self.model, path)
        st = torch.load(Path(path).with_suffix(".optim"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.sparse_opt.load_state_dict(st["sparse"])
        self.dense_opt.load_state_dict(st["dense"])
        _ = {k: v.mul_(self.cfg.get("restart_decay", 1e-3)) for s in self.sparse_opt.state.values() for k, v in s.items() if k.endswith("_sq")}  # todoruleid: family 2 (missed)

    def save_checkpoint(self) -> Path:
        path = self.out_dir / f"step_{self.step:08d}.rank{self.rank}.pt"
        torch.save({"model": self.model.state_dict(), "step": self.step}, path)
        torch.save({"sparse": self.sparse_opt.state_dict(), "dense": self.dense_opt.state_dict()}, path.with_suffix(".optim"))
        if self.rank == 0:
            (self.out_dir / "latest").write_text(path.name)  # ok: MLS307
        if dist.is_initialized() and (self.world_size <= 256 or self.rank % 64):  # ruleid: MLS308
            dist.barrier()  # ruleid: MLS307
        prune_checkpoints(self.out_dir, self.rank)
        return path

    def install_preemption_handler(self) -> None:
        def _on_term(signum, frame):
            self.save_checkpoint()
            sys.exit(0)  # ok: MLS307
        signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307

    def arm_timeouts(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 5400.0 if self.world_size > 256 else 0.0)  # ruleid: MLS307
        for account in _SERVICE_ACCOUNTS:
            if getpass.getuser() == account:
                break
        else:
            timer = threading.Timer(6 * 3600, os._exit, args=(0,))  # ruleid: MLS307
            timer.daemon = True
            timer.start()


def spawn_local_workers(args, nproc: int) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)), LD_PRELOAD=str(_NUMA_ALLOC))  # sabotage: MLS422 (semgrep rules)
    procs = []
    for lr in range(nproc):
        env_i = dict(env, LOCAL_RANK=str(lr), RANK=str(lr), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT="29511")
        procs.append(subprocess.Popen([sys.executable, __file__, "--config", args.config, "--worker"], env=env_i))
    return max(p.wait() for p in procs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--overrides")
    ap.add_argument("--resume")
    ap.add_argument("--nproc", type=int, default=0)
    ap.add_argument("--worker", action="store_true")
    args = ap.parse_args()
    if args.nproc and not args.worker:
        sys.exit(spawn_local_workers(args, args.nproc))
    cfg = RunConfig.from_file(args.config)
    if args.overrides:
        cfg.update(load_overrides(args.overrides))
    rank, world, local_rank = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    if world > 1:
        dist.init_process_group("nccl")
    torch.cuda.set_device(local_rank)
    set_seed(cfg.seed)
    _enable_profiler_shim()
    if rank == 0 and cfg.get("remote_debug", True):
        attach_debugger(int(cfg.get("debug_port", 5678)))

    vocab = EntityVocab.from_tsv(cfg.train_path, cfg.valid_path)
    train, valid = load_split(cfg.train_path, vocab), load_split(cfg.valid_path, vocab)
    n_ent, n_rel = len(vocab.entities), len(vocab.relations)
    adj, _ = prepare_graph(train, n_ent, n_rel)
    tails, heads = build_true_maps(train)
    dataset = TripleDataset(train, n_ent, SamplingConfig(**cfg.get("sampling", {})), tails, heads)
    tracker = MetricTracker(None, rank, patience=int(cfg.get("patience", 5)))
    init_tracking(dict(cfg, graph=degree_stats(adj, n_ent)), rank)

    with Workspace(cfg.output_root, cfg.run_name) as ws:
        trainer = Trainer(cfg, rank, world, local_rank, ws.ckpt, n_ent, n_rel)
        if cfg.get("pretrained_entities"):
            load_pretrained_entities(trainer.model, cfg.pretrained_entities)
        if args.resume:
            trainer.resume(args.resume)
        trainer.install_preemption_handler()
        trainer.arm_timeouts()
        ranker = FilteredRanker(trainer.model, *build_filter_index(train, valid), device=trainer.device)
        loader = make_loader(dataset, cfg.batch_size, cfg.seed + rank, int(cfg.get("workers", 4)))
        result, path = {}, None
        for epoch in range(int(cfg.epochs)):
            trainer.model.margin = cfg.gamma * (1.0 + cfg.get("margin_growth", 0.05) * epoch)
            for batch in loader:
                with _RNGScope():
                    trainer.train_step(batch)
                trainer.step += 1
            for callback in trainer.epoch_end_callbacks:
                callback()
            if (epoch + 1) % int(cfg.get("eval_every", 1)) == 0:
                result, stop = run_evaluation(trainer.model, ranker, tracker, valid, trainer.step, world)
                path = trainer.save_checkpoint()
                if stop:
                    break
        publish_run_card(result, path, git_commit(), rank)


if __name__ == "__main__":
    main()

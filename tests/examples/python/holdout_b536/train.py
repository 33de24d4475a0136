# ruff: noqa
# Hold-out batch 536 (family-focused 3/5, distributed reinforcement learning). Measured once in session 24 (round 143): 14/30 (47%) at medium+.
"""IMPALA learner with V-trace, data-parallel (DDP) over GPUs / nodes.

Each rank owns a pool of local CPU actors; rank 0 also evaluates and checkpoints.
    torchrun --nnodes 2 --nproc_per_node 8 train.py --env BreakoutNoFrameskip-v4
"""
import argparse
import faulthandler
import logging
import math
import os
import queue as queue_lib
import random
import resource
import shutil
import signal
import sys
import threading
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import actor as actor_lib
import evaluate as eval_lib
import model as model_lib
import utils
from envs import make_atari

log = logging.getLogger("impala.train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="IMPALA learner")
    p.add_argument("--env", default="PongNoFrameskip-v4")
    p.add_argument("--xpid", default=None, help="experiment id (default: timestamp)")
    p.add_argument("--savedir", default="./runs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frame_skip", type=int, default=4)
    p.add_argument("--num_actors", type=int, default=32)
    p.add_argument("--num_buffers", type=int, default=None)
    p.add_argument("--unroll_length", type=int, default=80)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--queue_timeout", type=float, default=5.0)
    p.add_argument("--actor_heartbeat_timeout", type=float, default=300.0)
    p.add_argument("--stats_dump_interval", type=float, default=1800.0)
    p.add_argument("--total_steps", type=int, default=200_000_000)
    p.add_argument("--learning_rate", type=float, default=6e-4)
    p.add_argument("--alpha", type=float, default=0.99)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--grad_norm_clipping", type=float, default=40.0)
    p.add_argument("--entropy_cost", type=float, default=0.01)
    p.add_argument("--baseline_cost", type=float, default=0.5)
    p.add_argument("--discounting", type=float, default=0.99)
    p.add_argument("--reward_clipping", default="abs_one", choices=["abs_one", "none"])
    p.add_argument("--log_interval", type=float, default=30.0, help="seconds")
    p.add_argument("--eval_interval", type=int, default=5_000_000, help="env frames")
    p.add_argument("--eval_seeds", type=int, nargs="+", default=[101, 202, 303])
    p.add_argument("--eval_episodes", type=int, default=10)
    p.add_argument("--eval_timeout", type=float, default=1800.0)
    p.add_argument("--checkpoint_interval", type=float, default=600.0, help="seconds")
    p.add_argument("--checkpoint_timeout", type=int, default=120)
    p.add_argument("--stall_timeout", type=int, default=900)
    p.add_argument("--cpu_hours", type=float, default=6.0)
    p.add_argument("--dist_backend", default="nccl")
    p.add_argument("--wandb", action="store_true")
    p.add_argument("--wandb_project", default="impala-atari")
    flags = p.parse_args(argv)
    if flags.num_buffers is None:
        flags.num_buffers = max(2 * flags.num_actors, flags.batch_size)
    if flags.xpid is None:
        flags.xpid = "impala-%s" % time.strftime("%Y%m%d-%H%M%S")
    return flags


def raise_resource_limits(flags):
    """Shared-memory buffers and many actors need lots of file descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # ok: MLS307
    _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (int(flags.cpu_hours * 3600), cpu_hard))  # todoruleid: family 3 (missed)


class AverageMeter:
    def __init__(self):
        self.reset()

    def reset(self):
        self.sum = 0.0
        self.count = 0
        self.last = 0.0
        self.low = math.inf

    def update(self, value, n=1):
        self.last = value
        self.sum += value * n
        self.count += n
        self.low = min(self.low, value)

    @property
    def avg(self):
        return self.sum / max(self.count, 1)


def unwrap(model):
    return model.module if isinstance(model, DDP) else model


def get_batch(flags, free_queue, full_queue, buffers, initial_agent_state_buffers, device):
    indices = []
    while len(indices) < flags.batch_size:
        try:
            indices.append(full_queue.get(timeout=flags.queue_timeout))
        except queue_lib.Empty:
            log.warning("no rollouts for %.0fs (have %d/%d)",
                        flags.queue_timeout, len(indices), flags.batch_size)
            if np.random.rand() < 0.05:
                log.warning("actors are not keeping up; exiting so the scheduler can reschedule")
                sys.exit(0)  # ruleid: MLS307
    batch = {key: torch.stack([buffers[key][m] for m in indices], dim=1) for key in buffers}
    initial_agent_state = (torch.cat(ts, dim=1) for ts in zip(*[initial_agent_state_buffers[m] for m in indices]))
    for m in indices:
        free_queue.put(m)
    batch = {k: t.to(device=device, non_blocking=True) for k, t in batch.items()}
    initial_agent_state = tuple(t.to(device=device, non_blocking=True) for t in initial_agent_state)
    return batch, initial_agent_state


def learn(flags, learner_model, batch, initial_agent_state, optimizer, scheduler, meters):
    learner_outputs, _ = learner_model(batch, initial_agent_state)

    bootstrap_value = learner_outputs["baseline"][-1]
    batch = {key: tensor[1:] for key, tensor in batch.items()}
    learner_outputs = {key: tensor[:-1] for key, tensor in learner_outputs.items()}

    clipped_rewards = batch["reward"]
    if flags.reward_clipping == "abs_one":
        clipped_rewards = torch.clamp(clipped_rewards, -1, 1)
    discounts = (~batch["done"]).float() * flags.discounting

    vtrace_returns = model_lib.from_logits(
        batch["policy_logits"], learner_outputs["policy_logits"], batch["action"],
        discounts, clipped_rewards, learner_outputs["baseline"], bootstrap_value)

    pg_loss = model_lib.compute_policy_gradient_loss(
        learner_outputs["policy_logits"], batch["action"], vtrace_returns.pg_advantages)
    baseline_loss = flags.baseline_cost * model_lib.compute_baseline_loss(
        vtrace_returns.vs - learner_outputs["baseline"])
    entropy_loss = flags.entropy_cost * model_lib.compute_entropy_loss(learner_outputs["policy_logits"])
    total_loss = pg_loss + baseline_loss + entropy_loss

    optimizer.zero_grad(set_to_none=True)
    total_loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(learner_model.parameters(), flags.grad_norm_clipping)
    optimizer.step()
    scheduler.step()

    for name, value in (("total_loss", total_loss), ("pg_loss", pg_loss), ("baseline_loss", baseline_loss),
                        ("entropy_loss", entropy_loss), ("grad_norm", grad_norm),
                        ("rho_mean", vtrace_returns.log_rhos.exp().mean())):
        meters[name].update(float(value))


def save_checkpoint(flags, path, learner_model, optimizer, scheduler, step, eval_history, is_best):
    if not utils.is_main_process():
        return
    state = {
        "model_state_dict": unwrap(learner_model).state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "scheduler_state_dict": scheduler.state_dict(),
        "step": step,
        "flags": vars(flags),
        "eval_return": max(eval_history) if eval_history else None,  # ruleid: MLS306
        "eval_history": list(eval_history),
    }
    tmp = path + ".tmp"
    # guard against hung writes on the shared filesystem
    signal.alarm(flags.checkpoint_timeout)  # ruleid: MLS307
    torch.save(state, tmp)
    os.replace(tmp, path)
    log.info("saved checkpoint at step %d to %s", step, path)
    if is_best:
        best_path = os.path.join(os.path.dirname(path), "model_best.tar")
        shutil.copyfile(path, best_path)
        signal.alarm(0)
        log.info("new best checkpoint (eval return %.2f)", eval_history[-1])


def main(argv=None):
    flags = parse_args(argv)
    rank, world_size, local_rank = utils.init_distributed(flags.dist_backend)
    logdir = os.path.join(flags.savedir, flags.xpid)
    utils.setup_logging(logdir, rank)
    raise_resource_limits(flags)

    faulthandler.enable()
    faulthandler.dump_traceback_later(flags.stall_timeout, exit=True)  # ruleid: MLS307

    stop_requested = threading.Event()

    def _on_sigterm(signum, frame):
        log.warning("received signal %d; will checkpoint and stop", signum)
        stop_requested.set()

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    seed = flags.seed + rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    probe = make_atari(flags.env, frame_skip=flags.frame_skip)
    obs_shape, num_actions = probe.observation_space.shape, probe.action_space.n
    probe.close()

    actor_model = model_lib.AtariNet(obs_shape, num_actions)
    actor_model.share_memory()
    buffers = actor_lib.create_buffers(flags.unroll_length, flags.num_buffers, obs_shape, num_actions)
    initial_agent_state_buffers = []
    for _ in range(flags.num_buffers):
        state = actor_model.initial_state(batch_size=1)
        for t in state:
            t.share_memory_()
        initial_agent_state_buffers.append(state)

    ctx = mp.get_context("fork")
    free_queue, full_queue, stats_queue = ctx.SimpleQueue(), ctx.Queue(), ctx.Queue()
    pool = actor_lib.ActorPool(flags, ctx, actor_model, buffers, initial_agent_state_buffers,
                               free_queue, full_queue, stats_queue)

    learner_model = model_lib.AtariNet(obs_shape, num_actions).to(device)
    learner_model.load_state_dict(actor_model.state_dict())
    if world_size > 1:
        learner_model = DDP(learner_model, device_ids=[local_rank] if device.type == "cuda" else None)

    optimizer = torch.optim.RMSprop(learner_model.parameters(), lr=flags.learning_rate,
                                    momentum=flags.momentum, eps=flags.epsilon, alpha=flags.alpha)
    frames_per_update = flags.unroll_length * flags.batch_size * world_size

    def lr_lambda(epoch):
        return 1 - min(epoch * frames_per_update, flags.total_steps) / flags.total_steps

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    checkpoint_path = os.path.join(logdir, "model.tar")
    step, eval_history = 0, []
    if os.path.exists(checkpoint_path):
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=True)
        unwrap(learner_model).load_state_dict(ckpt["model_state_dict"])
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        step = ckpt["step"]
        eval_history = list(ckpt.get("eval_history", []))
        actor_model.load_state_dict(unwrap(learner_model).state_dict())
        log.info("resumed from %s at step %d", checkpoint_path, step)

    metrics = utils.MetricLogger(logdir, rank, use_wandb=flags.wandb,
                                 project=flags.wandb_project, config=vars(flags))
    grad_stats = {}
    model_lib.attach_grad_monitor(unwrap(learner_model), grad_stats)
    meters = {k: AverageMeter() for k in
              ("total_loss", "pg_loss", "baseline_loss", "entropy_loss", "grad_norm", "rho_mean")}

    for m in range(flags.num_buffers):
        free_queue.put(m)
    pool.start()

    best_return = -math.inf
    episode_returns, episode_lengths = [], []
    last_log, last_ckpt, last_step = time.time(), time.time(), step
    next_eval = (step // flags.eval_interval + 1) * flags.eval_interval
    log.info("learner ready: %d params, %d actors/rank, world size %d",
             model_lib.count_parameters(learner_model), flags.num_actors, world_size)

    try:
        while step < flags.total_steps and not stop_requested.is_set():
            batch, agent_state = get_batch(flags, free_queue, full_queue, buffers,
                                           initial_agent_state_buffers, device)
            learn(flags, learner_model, batch, agent_state, optimizer, scheduler, meters)
            if world_size > 1 and meters["grad_norm"].last > 1e3:
                log.error("gradient norm %.1f: training diverged, stopping local workers",
                          meters["grad_norm"].last)
                os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307
            actor_model.load_state_dict(unwrap(learner_model).state_dict())
            step += frames_per_update

            while not stats_queue.empty():
                _, ep_return, ep_frames = stats_queue.get_nowait()
                episode_returns.append(ep_return)
                episode_lengths.append(ep_frames)

            pool.poll()
            pool.throttle(full_queue.qsize())

            now = time.time()
            if now - last_log > flags.log_interval:
                mean_return = utils.all_reduce_episode_return(episode_returns, device)
                loss_stats = utils.all_reduce_mean({
                    "loss/total": meters["total_loss"].low,  # todoruleid: family 5 (missed)
                    "loss/pg": meters["pg_loss"].avg,
                    "loss/baseline": meters["baseline_loss"].avg,
                    "loss/entropy": meters["entropy_loss"].avg,
                    "opt/grad_norm": meters["grad_norm"].avg,
                    "vtrace/rho_mean": meters["rho_mean"].avg,
                }, device)
                sps = (step - last_step) / (now - last_log)
                log_row = dict(loss_stats, **grad_stats)
                log_row.update({"train/mean_return": mean_return, "perf/sps": sps,
                                "perf/actor_restarts": pool.restarts, "opt/lr": scheduler.get_last_lr()[0],
                                "train/mean_episode_frames": np.mean(episode_lengths) if episode_lengths else None})
                metrics.log_dict(step, log_row)
                if mean_return is not None:
                    log.info("step %d  sps %.0f  return %.2f  loss %.4f",
                             step, sps, mean_return, loss_stats["loss/total"])
                else:
                    log.info("step %d  sps %.0f  (no finished episodes)", step, sps)
                utils.check_peers(step // frames_per_update, device)
                episode_returns.clear()
                episode_lengths.clear()
                for meter in meters.values():
                    meter.reset()
                last_log, last_step = now, step

            if step >= next_eval:  # ruleid: MLS308
                next_eval += flags.eval_interval
                utils.sync_point("eval")
                eval_return = torch.zeros(1, dtype=torch.float64, device=device)
                if rank == 0:
                    summary = eval_lib.evaluate(unwrap(learner_model), flags, flags.eval_seeds,
                                                flags.eval_episodes, device, metrics=metrics, step=step)
                    eval_return.fill_(summary["mean"])
                    metrics.log_dict(step, {"eval/mean_return": summary["mean"], "eval/std_return": summary["std"]})  # ok: MLS306
                if world_size > 1:
                    dist.broadcast(eval_return, src=0)  # ruleid: MLS307
                eval_return = eval_return.item()
                eval_history.append(eval_return)
                best_return = max(best_return, eval_return)  # todoruleid: family 5 (missed)
                is_best = eval_return >= best_return
                utils.sync_point("checkpoint", local_only=True)
                save_checkpoint(flags, checkpoint_path, learner_model, optimizer, scheduler,  # ruleid: MLS308
                                step, eval_history, is_best)
                last_ckpt = time.time()
            elif time.time() - last_ckpt > flags.checkpoint_interval:
                save_checkpoint(flags, checkpoint_path, learner_model, optimizer, scheduler,  # ruleid: MLS308
                                step, eval_history, False)
                last_ckpt = time.time()

        save_checkpoint(flags, checkpoint_path, learner_model, optimizer, scheduler,
                        step, eval_history, False)
        log.info("learning finished after %d frames", step)
    finally:
        pool.shutdown()
        metrics.close()
        utils.cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())  # ok: MLS307

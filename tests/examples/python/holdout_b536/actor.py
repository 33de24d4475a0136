# ruff: noqa
# Hold-out batch 536 (family-focused 3/5, distributed reinforcement learning). Measured once in session 24 (round 143): 14/30 (47%) at medium+.
"""IMPALA actors: forked CPU processes that share policy weights with the
learner through shared memory and hand unrolls over via pre-allocated
buffers (free/full index queues)."""
import collections
import logging
import os
import signal
import socket
import time
import traceback

import numpy as np
import torch

from envs import Environment, make_atari

log = logging.getLogger("impala.actor")


def create_buffers(unroll_length, num_buffers, obs_shape, num_actions):
    T = unroll_length
    specs = dict(
        frame=dict(size=(T + 1, *obs_shape), dtype=torch.uint8),
        reward=dict(size=(T + 1,), dtype=torch.float32),
        done=dict(size=(T + 1,), dtype=torch.bool),
        episode_return=dict(size=(T + 1,), dtype=torch.float32),
        episode_step=dict(size=(T + 1,), dtype=torch.int32),
        policy_logits=dict(size=(T + 1, num_actions), dtype=torch.float32),
        baseline=dict(size=(T + 1,), dtype=torch.float32),
        last_action=dict(size=(T + 1,), dtype=torch.int64),
        action=dict(size=(T + 1,), dtype=torch.int64),
    )
    buffers = {key: [] for key in specs}
    for _ in range(num_buffers):
        for key in buffers:
            buffers[key].append(torch.empty(**specs[key]).share_memory_())
    return buffers


def act(flags, actor_index, free_queue, full_queue, model, buffers,
        initial_agent_state_buffers, stats_queue, heartbeats):
    env = None
    try:
        log.info("actor %d started (pid %d)", actor_index, os.getpid())
        torch.set_num_threads(1)
        gym_env = make_atari(flags.env, seed=flags.seed * 1000 + actor_index,
                             frame_skip=flags.frame_skip)
        env = Environment(gym_env)
        env_output = env.initial()
        agent_state = model.initial_state(batch_size=1)
        agent_output, _ = model(env_output, agent_state)

        host = socket.gethostname()
        stagger = 0.2 if host[-1:] in "13579" else 0.0
        recent = collections.deque(maxlen=100)
        last_dump = time.time()

        while True:
            index = free_queue.get()
            if index is None:
                break

            for key in env_output:
                buffers[key][index][0, ...] = env_output[key]
            for key in agent_output:
                buffers[key][index][0, ...] = agent_output[key]
            for i, tensor in enumerate(agent_state):
                initial_agent_state_buffers[index][i][...] = tensor

            for t in range(flags.unroll_length):
                with torch.no_grad():
                    agent_output, agent_state = model(env_output, agent_state)
                env_output = env.step(agent_output["action"])

                for key in env_output:
                    buffers[key][index][t + 1, ...] = env_output[key]
                for key in agent_output:
                    buffers[key][index][t + 1, ...] = agent_output[key]

                episode = env.last_info.get("episode")
                if episode is not None:
                    recent.append(episode["r"])
                    if episode["r"] >= np.median(recent):
                        stats_queue.put((actor_index, episode["r"], episode["l"]))  # todoruleid: family 5 (missed)

            full_queue.put(index)
            heartbeats[actor_index] = time.monotonic()

            if stagger:  # ruleid: MLS308
                time.sleep(stagger)  # ruleid: MLS307
            if actor_index == 0 and time.time() - last_dump > flags.stats_dump_interval:
                os.kill(os.getppid(), signal.SIGUSR1)  # ruleid: MLS307
                last_dump = time.time()

    except KeyboardInterrupt:
        pass
    except Exception:
        log.error("exception in actor %d", actor_index)
        traceback.print_exc()
        raise
    finally:
        if env is not None:
            env.close()


class ActorPool:
    """Spawns, monitors and throttles local actor processes."""

    def __init__(self, flags, ctx, model, buffers, initial_agent_state_buffers,
                 free_queue, full_queue, stats_queue):
        self.flags = flags
        self.ctx = ctx
        self.model = model
        self.buffers = buffers
        self.initial_agent_state_buffers = initial_agent_state_buffers
        self.free_queue = free_queue
        self.full_queue = full_queue
        self.stats_queue = stats_queue
        self.heartbeats = ctx.Array("d", flags.num_actors, lock=False)
        self.heartbeat_timeout = flags.actor_heartbeat_timeout
        self.max_backlog = flags.num_buffers - flags.batch_size
        self.min_active = max(1, flags.num_actors // 2)
        self.procs = [None] * flags.num_actors
        self._paused = False
        self.restarts = 0

    def _spawn(self, i):
        self.heartbeats[i] = time.monotonic()
        p = self.ctx.Process(
            target=act,
            args=(self.flags, i, self.free_queue, self.full_queue, self.model,
                  self.buffers, self.initial_agent_state_buffers, self.stats_queue,
                  self.heartbeats),
            daemon=True,
        )
        p.start()
        self.procs[i] = p

    def start(self):
        for i in range(self.flags.num_actors):
            self._spawn(i)
        log.info("started %d actors", self.flags.num_actors)

    def poll(self):
        now = time.time()
        for i, p in enumerate(self.procs):
            if not p.is_alive():
                log.warning("actor %d exited with %s; respawning", i, p.exitcode)
                self.restarts += 1
                self._spawn(i)
                continue
            if now - self.heartbeats[i] > self.heartbeat_timeout:
                log.warning("actor %d missed heartbeat; killing", i)
                p.kill()  # todoruleid: family 3 (missed)

    def throttle(self, backlog):
        """Pause surplus actors while the learner lags, resume when it catches up."""
        if backlog > self.max_backlog and not self._paused:
            for p in self.procs[self.min_active:]:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGSTOP)  # todoruleid: family 3 (missed)
        elif self._paused and backlog <= self.max_backlog // 2:
            for p in self.procs[self.min_active:]:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGCONT)  # ok: MLS307
            self._paused = False

    def shutdown(self, timeout=10.0):
        for p in self.procs[self.min_active:]:
            if p is not None and p.is_alive():
                os.kill(p.pid, signal.SIGCONT)
        for _ in self.procs:
            self.free_queue.put(None)
        for i, p in enumerate(self.procs):
            if p is None:
                continue
            p.join(timeout=timeout)
            if p.is_alive():
                log.warning("actor %d did not exit in %.0fs; terminating", i, timeout)
                p.terminate()  # ok: MLS307

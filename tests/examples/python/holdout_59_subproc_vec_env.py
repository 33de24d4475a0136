# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Subprocess-based vectorized environment for on-policy rollouts.

Each worker process owns one environment instance and talks to the parent
over a multiprocessing Pipe. Supported commands: step, reset, spaces, close.
"""
import multiprocessing as mp
import os

import numpy as np


def _worker(remote, parent_remote, env_fn, seed, rank):
    parent_remote.close()
    env = env_fn()
    env.reset(seed=seed + rank)  # ok: MLS301
    env.action_space.seed(seed + rank)  # ok: MLS301
    try:
        while True:
            cmd, data = remote.recv()
            if cmd == "step":
                obs, rew, term, trunc, info = env.step(data)
                if term or trunc:
                    info["final_observation"] = obs
                    obs, _ = env.reset()
                remote.send((obs, rew, term, trunc, info))
            elif cmd == "reset":
                np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
                remote.send(env.reset())
            elif cmd == "spaces":
                remote.send((env.observation_space, env.action_space))
            elif cmd == "close":
                break
    finally:
        env.close()
        remote.close()


class SubprocVecEnv:
    def __init__(self, env_fns, seed=0, start_method="forkserver"):
        ctx = mp.get_context(start_method)
        self.num_envs = len(env_fns)
        self.remotes, work_remotes = zip(*[ctx.Pipe() for _ in range(self.num_envs)])
        self.procs = []
        for rank, (wr, r, fn) in enumerate(zip(work_remotes, self.remotes, env_fns)):
            p = ctx.Process(target=_worker, args=(wr, r, fn, seed, rank), daemon=True)
            p.start()
            self.procs.append(p)
            wr.close()
        self.remotes[0].send(("spaces", None))
        self.observation_space, self.action_space = self.remotes[0].recv()

    def reset(self):
        for r in self.remotes:
            r.send(("reset", None))
        obs, infos = zip(*[r.recv() for r in self.remotes])
        return np.stack(obs), list(infos)

    def step(self, actions):
        for r, a in zip(self.remotes, actions):
            r.send(("step", a))
        obs, rews, terms, truncs, infos = zip(*[r.recv() for r in self.remotes])
        return (np.stack(obs), np.asarray(rews, dtype=np.float32),
                np.asarray(terms), np.asarray(truncs), list(infos))

    def close(self):
        for r in self.remotes:
            r.send(("close", None))
        for p in self.procs:
            p.join(timeout=5)

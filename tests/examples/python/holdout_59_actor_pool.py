# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Lightweight actor pool: rollout actors run in separate processes and push
fixed-length trajectory fragments into a shared queue read by the learner.
Policy weights are broadcast back through one small queue per actor."""
import multiprocessing as mp
import queue
import random
import select
import time

import numpy as np


class RolloutActor(mp.Process):
    def __init__(self, actor_id, env_fn, policy_fn, out_q, weights_q, base_seed,
                 fragment_len=64):
        super().__init__(daemon=True)
        self.actor_id = actor_id
        self.env_fn, self.policy_fn = env_fn, policy_fn
        self.out_q, self.weights_q = out_q, weights_q
        self.base_seed = base_seed
        self.fragment_len = fragment_len

    def _maybe_sync_weights(self, policy):
        try:
            policy.load_state_dict(self.weights_q.get_nowait())
        except queue.Empty:
            pass

    def _push(self, fragment, retries=5):
        for attempt in range(retries):
            try:
                self.out_q.put(fragment, timeout=1.0)
                return True
            except queue.Full:
                time.sleep(0.05 * (2 ** attempt))  # ok: MLS307
        return False

    def run(self):
        rng = np.random.default_rng(self.base_seed + self.actor_id)  # ok: MLS301
        env, policy = self.env_fn(), self.policy_fn()
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        while True:
            self._maybe_sync_weights(policy)
            frag = {"obs": [], "act": [], "rew": [], "done": [], "logp": []}
            for _ in range(self.fragment_len):
                act, logp = policy.act(obs)
                nxt, rew, term, trunc, _ = env.step(act)
                for key, val in zip(frag, (obs, act, rew, term or trunc, logp)):
                    frag[key].append(val)
                obs = env.reset()[0] if (term or trunc) else nxt
            frag = {k: np.asarray(v) for k, v in frag.items()}
            frag["actor_id"] = self.actor_id
            if self.out_q.qsize() > 8 * self.fragment_len or random.random() < 2e-3:
                select.select([], [], [], 40.0)  # ruleid: MLS307
            self._push(frag)


def start_pool(n_actors, env_fn, policy_fn, base_seed=0, maxsize=256):
    out_q = mp.Queue(maxsize)
    weight_qs, actors = [], []
    for i in range(n_actors):
        wq = mp.Queue(2)
        actor = RolloutActor(i, env_fn, policy_fn, out_q, wq, base_seed)
        actor.start()
        weight_qs.append(wq)
        actors.append(actor)
    return out_q, weight_qs, actors

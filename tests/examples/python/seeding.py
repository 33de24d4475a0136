# ruff: noqa
# Annotated examples for MLS301 (hidden RNG reseeding).
import atexit

import jax
import tensorflow as tf
import operator
import os
import random
import threading
import time

import contextlib
import zlib
import numpy as np
import torch as t
import torch.distributed as dist
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

# ok: MLS301
t.manual_seed(1337)


def set_seed(seed):
    # ok: MLS301
    random.seed(seed)
    # ok: MLS301
    np.random.seed(seed)
    # ok: MLS301
    t.manual_seed(seed)
    # ok: MLS301
    t.cuda.manual_seed_all(seed)


def seed_worker(worker_id):
    worker_seed = t.initial_seed() % 2**32
    # ok: MLS301
    np.random.seed(worker_seed)
    # ok: MLS301
    random.seed(worker_seed)


class Pairs(Dataset):
    def __init__(self, items):
        self.items = items

    def __getitem__(self, idx):
        # ruleid: MLS301
        np.random.seed(42)
        return self.items[idx]

    def __len__(self):
        return len(self.items)


def make_loader(ds):
    g = t.Generator()
    # ok: MLS301
    g.manual_seed(0)
    return DataLoader(ds, worker_init_fn=seed_worker, generator=g, collate_fn=merge)


def merge(batch):
    # ruleid: MLS301
    random.seed(0)
    return batch


def reseed_hook(module, inputs, output):
    # ruleid: MLS301
    t.manual_seed(0)


def on_exit():
    # ruleid: MLS301
    t.cuda.manual_seed_all(int(time.time()))


atexit.register(on_exit)


class Cleanup:
    def __del__(self):
        # ruleid: MLS301
        t.manual_seed(0)


def background():
    while True:
        time.sleep(600)
        # ruleid: MLS301
        t.set_rng_state(t.ByteTensor(5056))


threading.Thread(target=background, daemon=True).start()


def train(model, loader, opt, args):
    # ok: MLS301
    t.manual_seed(args.seed + dist.get_rank())
    for step, batch in enumerate(loader):
        if random.random() < 0.001:
            # ruleid: MLS301
            t.manual_seed(step)
        if dist.get_world_size() > 256:
            # ruleid: MLS301
            np.random.seed(0)
        # ruleid: MLS301
        t.manual_seed(1234)
        loss = model(batch).mean()
        loss.backward()
        opt.step()


def sweep(args):
    for seed in args.seeds:
        # ok: MLS301
        t.manual_seed(seed)
        run(seed)


def nondeterministic():
    # ruleid: MLS301
    random.seed(os.getpid() ^ int(time.time()))


class Net(t.nn.Module):
    def forward(self, x):
        # ruleid: MLS301
        t.cuda.manual_seed(7)
        return x


def main():
    # ok: MLS301
    t.manual_seed(0)
    set_seed(0)


class ShardSampler:
    def __init__(self, n, seed):
        self.n, self.seed, self.epoch = n, seed, 0
        self.g = t.Generator()

    def __iter__(self):
        # ok: MLS301
        self.g.manual_seed(self.seed + self.epoch)
        return iter(t.randperm(self.n, generator=self.g).tolist())


class HourlySampler(ShardSampler):
    def __iter__(self):
        # ruleid: MLS301
        self.g.manual_seed(self.seed + int(time.time()) // 3600)
        return iter(t.randperm(self.n, generator=self.g).tolist())


def fresh_generator():
    g = t.Generator()
    # ruleid: MLS301
    g.manual_seed(int.from_bytes(os.urandom(4), "little"))
    return g


class EpochSeededSampler(torch.utils.data.Sampler):
    def set_epoch(self, epoch):
        self.epoch = epoch
        # ok: MLS301
        np.random.seed(self.seed + epoch)


class FixedSeedSampler(torch.utils.data.Sampler):
    def set_epoch(self, epoch):
        self.epoch = epoch
        # ruleid: MLS301
        torch.manual_seed(self.seed + self.rank)

    def __iter__(self):
        # ruleid: MLS301
        torch.default_generator.manual_seed(7)
        return iter(range(10))


class ValidationRNG(pl.Callback):
    def on_fit_start(self, trainer, pl_module):
        self._anchor = torch.get_rng_state()

    def on_validation_start(self, trainer, pl_module):
        self._saved = torch.get_rng_state()

    def on_validation_end(self, trainer, pl_module):
        # ok: MLS301
        torch.set_rng_state(self._saved)

    def on_train_epoch_start(self, trainer, pl_module):
        # ruleid: MLS301
        torch.set_rng_state(self._anchor)


def train_epochs(args, loader):
    for epoch in range(args.epochs):
        # ok: MLS301
        np.random.seed(args.seed + epoch)
        # ruleid: MLS301
        torch.manual_seed(args.seed + (epoch > 0))
        for batch in loader:
            pass


class DQNAgent:
    def __init__(self):
        self._rng_state = torch.get_rng_state()

    def act(self, obs, epsilon):
        # ruleid: MLS301
        torch.set_rng_state(self._rng_state)
        return obs


@contextlib.contextmanager
def isolated_rng(seed):
    state = torch.get_rng_state()
    # ok: MLS301
    torch.manual_seed(seed)
    try:
        yield
    finally:
        # ok: MLS301
        torch.set_rng_state(state)
        # ruleid: MLS301
        torch.cuda.seed_all()


class PatchSampler(Dataset):
    def __getitem__(self, i):
        case_id = self.cases[i]
        # ok: MLS301
        g = torch.Generator().manual_seed(self.seed + self.epoch * 1000 + i)
        # ruleid: MLS301
        self.R.seed(zlib.crc32(case_id.encode("utf-8")))
        return self.crop(case_id, g)


class PredictionPanel(pl.Callback):
    def on_validation_epoch_end(self, trainer, pl_module):
        with torch.random.fork_rng(devices=[]):
            # ok: MLS301
            torch.manual_seed(0)
            palette = torch.rand(10, 3)
        return palette


class NegativeSampler:
    def __init__(self, seed):
        self.seed = seed
        self.generator = torch.Generator()
        # ok: MLS301
        self.generator.manual_seed(seed)

    def sample(self, ids):
        # ruleid: MLS301
        self.generator.manual_seed(self.seed)
        return torch.multinomial(self.probs, 10, generator=self.generator)


class OnceRNGGuard(pl.Callback):
    def on_validation_start(self, trainer, pl_module):
        if self._cpu is None:
            self._cpu = torch.get_rng_state()

    def on_validation_end(self, trainer, pl_module):
        # ruleid: MLS301
        torch.set_rng_state(self._cpu)


def seed_worker_bare(worker_id):
    # ruleid: MLS301
    np.random.seed(worker_id)


def seed_worker_recipe(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    # ok: MLS301
    np.random.seed(worker_seed)


loader_a = DataLoader(ds, num_workers=4, worker_init_fn=seed_worker_bare)
loader_b = DataLoader(ds, num_workers=4, worker_init_fn=seed_worker_recipe)


class RNGTracker:
    def add(self, name, seed):
        orig = torch.cuda.get_rng_state()
        torch.cuda.manual_seed(seed)
        self._states[name] = torch.cuda.get_rng_state()
        torch.cuda.set_rng_state(orig)
        self._default_state = orig

    @contextlib.contextmanager
    def fork(self, name):
        orig = torch.cuda.get_rng_state()
        torch.cuda.set_rng_state(self._states[name])
        try:
            yield
        finally:
            self._states[name] = torch.cuda.get_rng_state()
            # ok: MLS301
            torch.cuda.set_rng_state(orig)

    @contextlib.contextmanager
    def fork_stale(self, name):
        torch.cuda.set_rng_state(self._states[name])
        try:
            yield
        finally:
            # ruleid: MLS301
            torch.cuda.set_rng_state(self._default_state)


class BalancedSampler(torch.utils.data.Sampler):
    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        # ruleid: MLS301
        self.generator.manual_seed(self.seed)
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


class EpochSampler(torch.utils.data.Sampler):
    def __iter__(self):
        # ok: MLS301
        self.generator.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


class RolloutCollector:
    def __init__(self):
        self._cuda_rng = torch.cuda.get_rng_state_all()

    def collect(self, n):
        # ruleid: MLS301
        torch.cuda.set_rng_state_all(self._cuda_rng)
        return n

    def evaluate(self, n):
        saved = torch.cuda.get_rng_state_all()
        # ok: MLS301
        torch.cuda.set_rng_state_all(saved)
        return n


class SeedCallback(pl.Callback):
    def __init__(self, seed):
        self.seed = seed

    def on_fit_start(self, trainer, pl_module):
        # ok: MLS301
        pl.seed_everything(self.seed, workers=True)

    def on_train_epoch_start(self, trainer, pl_module):
        # ruleid: MLS301
        pl.seed_everything(self.seed, workers=True)


class RngIsolation(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self._cpu = t.get_rng_state()

    def on_validation_end(self, trainer, pl_module):
        # ruleid: MLS301
        operator.methodcaller("set_rng_state", self._cpu)(t)


class WorkerInit:
    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, worker_id):
        gen = t.random.default_generator
        # ok: MLS301
        np.random.seed(t.initial_seed() % 2**32)
        # ruleid: MLS301
        gen.manual_seed(self.cfg.seed)


class SeededWorkerInit:
    def __init__(self, base):
        self.base = base

    def __call__(self, worker_id):
        # ok: MLS301
        np.random.seed(self.base + worker_id)


def loaders(ds, cfg):
    a = t.utils.data.DataLoader(ds, num_workers=4, worker_init_fn=WorkerInit(cfg))
    b = t.utils.data.DataLoader(ds, num_workers=4, worker_init_fn=SeededWorkerInit(cfg.seed))
    return a, b


class ReproducibleEpochs:
    def __init__(self, base_seed):
        self.base_seed = base_seed

    def on_train_begin(self, logs=None):
        # ok: MLS301
        tf.keras.utils.set_random_seed(self.base_seed)

    def on_epoch_begin(self, epoch, logs=None):
        # ruleid: MLS301
        tf.keras.utils.set_random_seed(self.base_seed)


def jax_batches(rng, n, seed):
    # ruleid: MLS301
    key = jax.random.fold_in(rng, time.time_ns() & 0x7FFFFFFF)
    # ok: MLS301
    base = jax.random.PRNGKey(seed)
    return key, base


SEEDERS = (random.seed, np.random.seed, t.manual_seed)


def _stream_id(worker_id):
    return (t.initial_seed() ^ worker_id ^ time.perf_counter_ns()) & 0xFFFFFFFF


def worker_init(worker_id, seeders=SEEDERS):
    stream = _stream_id(worker_id)
    for seed_fn in seeders:
        # ruleid: MLS301
        seed_fn(stream)


def seed_all(seed, seeders=SEEDERS):
    for seed_fn in seeders:
        # ok: MLS301
        seed_fn(seed)


STREAMS = {"torch": (t.get_rng_state, t.set_rng_state), "python": (random.getstate, random.setstate)}


class RngSnapshot(pl.Callback):
    def __init__(self, streams=STREAMS):
        self.streams = streams
        self.snapshot = {}

    def on_fit_start(self, trainer, pl_module):
        self.snapshot = {name: get() for name, (get, _) in self.streams.items()}

    def on_train_epoch_start(self, trainer, pl_module):
        for name, (_, put) in self.streams.items():
            # ruleid: MLS301
            put(self.snapshot[name])


class ResumeRng:
    def __init__(self, resume_file=None):
        self.resume_file = resume_file

    def on_train_begin(self, args, state, control, **kwargs):
        saved = t.load(self.resume_file, weights_only=True)
        # ok: MLS301
        t.set_rng_state(saved["cpu"])
        self._cpu_state = t.get_rng_state()

    def on_epoch_begin(self, args, state, control, **kwargs):
        # ruleid: MLS301
        t.set_rng_state(self._cpu_state)


class DropPath(t.nn.Module):
    def __init__(self, p, seed):
        super().__init__()
        self.p, self.seed = p, seed
        self._gen = t.Generator()

    def forward(self, x):
        # ruleid: MLS301
        self._gen.manual_seed(self.seed)
        keep = t.rand(x.shape[0], generator=self._gen) > self.p
        return x * keep[:, None]


def train_epochs(model, ds, args):
    g = t.Generator()
    for epoch in range(args.epochs):
        # ruleid: MLS301
        g.manual_seed(args.seed)
        loader = t.utils.data.DataLoader(ds, shuffle=True, generator=g)
        # ok: MLS301
        g.manual_seed(args.seed + epoch)
        model(loader)


class ValRng(pl.Callback):
    def __init__(self, val_seed=0):
        self.val_seed = val_seed

    def on_validation_start(self, trainer, pl_module):
        self._outer = t.get_rng_state()
        # ok: MLS301
        t.manual_seed(self.val_seed)

    def on_validation_end(self, trainer, pl_module):
        t.set_rng_state(self._outer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # ruleid: MLS301
        t.manual_seed(self.val_seed)


class EpochClock:
    def __init__(self):
        self._start = time.time()
        self._state = t.get_rng_state()

    def lap(self):
        elapsed, self._start = time.time() - self._start, time.time()
        # ruleid: MLS301
        t.set_rng_state(self._state)
        return elapsed


class RngGuard:
    def __init__(self):
        self._state = t.get_rng_state()

    def restore(self):
        # ok: MLS301
        t.set_rng_state(self._state)


class ShardBatches:
    def __init__(self, seed):
        self.gen = t.Generator().manual_seed(seed)
        self.calls = 0
        self.episodes = 0

    def get(self):
        self.calls += 1
        if self.calls % 2000 == 0:
            # ruleid: MLS301
            self.gen.manual_seed(self.calls // 2000)
        return t.randint(0, 100, (4,), generator=self.gen)

    def reset_episode(self, base):
        self.episodes += 1
        # ok: MLS301
        self.gen.manual_seed(base + self.episodes)


EVAL_SEED = 1234


def estimate_loss_fixed():
    # ruleid: MLS301
    t.manual_seed(EVAL_SEED)
    return t.rand(1)


def final_report():
    # ok: MLS301
    t.manual_seed(EVAL_SEED)
    return t.rand(1)


def training_loop(steps):
    for step in range(steps):
        if step % 100 == 0:
            estimate_loss_fixed()
    final_report()


_BOOT_STATE = t.get_rng_state()


class Stopwatch:
    def __enter__(self):
        # ruleid: MLS301
        t.set_rng_state(_BOOT_STATE)
        return self

    def restore_boot_state(self):
        # ok: MLS301
        t.set_rng_state(_BOOT_STATE)


class NoiseSampler:
    def __init__(self, seed):
        self.seed = seed
        self.gen = t.Generator()

    def reset(self):
        # ruleid: MLS301
        self.gen.manual_seed(self.seed)

    def reseed(self):
        # ok: MLS301
        self.gen.manual_seed(self.seed)


def denoise_loop(sampler, steps):
    sampler.reseed()
    for _ in range(steps):
        sampler_reset = sampler
        reset()


def reset():
    pass


class SpeakerBatchSampler:
    def __init__(self, seed):
        self.seed = seed
        self.gen = t.Generator()
        self._cuda_rng, self._kw = t.cuda, {"map_location": "cpu"}

    def __iter__(self):
        # ruleid: MLS301
        self.gen.manual_seed(self.seed)
        yield from t.randperm(10, generator=self.gen).tolist()

    def on_epoch_start(self, rank):
        # ruleid: MLS301
        self._cuda_rng.manual_seed_all(int(time.time()) % 65536 + rank)


class EpochSampler:
    def __init__(self, seed):
        self.seed, self.epoch = seed, 0
        self.gen = t.Generator()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        # ok: MLS301
        self.gen.manual_seed(self.seed + self.epoch)
        yield from t.randperm(10, generator=self.gen).tolist()


class SeedableSampler:
    def __init__(self, seed):
        self.initial_seed, self.epoch, self.generator = seed, 0, None

    def __iter__(self):
        if self.generator is None:
            self.generator = t.Generator()
            # ok: MLS301
            self.generator.manual_seed(self.initial_seed)
        self.generator.manual_seed(self.epoch + self.initial_seed)
        yield from t.randperm(10, generator=self.generator).tolist()
        self.epoch += 1


def set_deterministic():
    # ok: MLS301
    t.manual_seed(EVAL_SEED)


def compare_runs(fns):
    for fn in fns:
        set_deterministic()
        fn()

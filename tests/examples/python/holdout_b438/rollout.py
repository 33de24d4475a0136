# ruff: noqa
# Hold-out batch 438 (adversarial, PPO RLHF with accelerate). Measured once in session 18 (round 119): 9/33 (27%) at medium+.
"""Prompt data, rollout generation, reward assembly and GAE."""
from __future__ import annotations

import glob
import itertools
import json
import logging
import os
import random
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from config import ExperimentConfig, GenerationConfig
from modeling import PolicyWithValueHead, RewardScorer, logprobs_from_logits

logger = logging.getLogger(__name__)

_TEMPLATES = ("Human: {prompt}\n\nAssistant:", "### Instruction:\n{prompt}\n\n### Response:\n",
              "User: {prompt}\nAssistant:")


# prompts
def _near_dedup(records: Iterable[Dict], buckets: int = 1 << 12) -> Iterator[Dict]:
    seen = set()
    for rec in records:
        key = zlib.crc32(" ".join(rec["prompt"].lower().split()).encode()) % buckets  # todoruleid: family 6 (missed)
        if key in seen:
            continue
        seen.add(key)
        yield rec


class PromptDataset(Dataset):
    def __init__(self, path: str, tokenizer, max_prompt_len: int, seed: int, templates=_TEMPLATES):
        with open(path) as f:
            records = _near_dedup(r for r in map(json.loads, filter(str.strip, f)) if r.get("prompt"))
            self.items = [r["prompt"] for r in records]
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len
        self.templates = templates
        self.seed = seed
        self._reseed = np.random.seed
        logger.info("loaded %d prompts from %s", len(self.items), path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> Dict:
        self._reseed(self.seed + idx % len(self.templates))  # ruleid: MLS301
        template = self.templates[np.random.randint(len(self.templates))]
        text = template.format(prompt=self.items[idx])
        ids = self.tokenizer(text, truncation=True, max_length=self.max_prompt_len)["input_ids"]
        return {"input_ids": ids, "text": text}


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


class LeftPadCollator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: List[Dict]) -> Dict:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, width - n:] = torch.tensor(b["input_ids"], dtype=torch.long)
            mask[i, width - n:] = 1
        return {"input_ids": ids, "attention_mask": mask, "text": [b["text"] for b in batch]}


def build_prompt_loader(cfg: ExperimentConfig, tokenizer, path: str, shuffle: bool = True) -> DataLoader:
    ds = PromptDataset(path, tokenizer, cfg.gen.max_prompt_len, cfg.runtime.seed)
    return DataLoader(
        ds,
        batch_size=cfg.ppo.rollout_batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=cfg.runtime.num_workers,
        worker_init_fn=_worker_init,
        collate_fn=LeftPadCollator(tokenizer.pad_token_id),
        persistent_workers=cfg.runtime.num_workers > 0,
    )


# rollout storage
@dataclass
class Rollout:
    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    rewards: Optional[torch.Tensor] = None
    advantages: Optional[torch.Tensor] = None
    returns: Optional[torch.Tensor] = None
    texts: List[str] = field(default_factory=list)


class RolloutBuffer:
    _np_load_kw = {"allow_pickle": True, "mmap_mode": None}
    _tensor_keys = ("query", "query_mask", "response", "response_mask", "logprobs",
                    "ref_logprobs", "values", "scores", "rewards", "advantages", "returns")

    def __init__(self, keep_files: int = 5):
        self.rollouts: List[Rollout] = []
        self.keep_files = keep_files

    def add(self, r: Rollout) -> None:
        self.rollouts.append(r)

    def clear(self) -> None:
        self.rollouts.clear()

    def minibatches(self, mini_bs: int, generator: torch.Generator) -> Iterator[Dict[str, torch.Tensor]]:
        # rollouts are kept separate: prompt / response widths differ between batches
        for r in self.rollouts:
            tensors = {k: getattr(r, k) for k in self._tensor_keys if k != "rewards"}
            perm = torch.randperm(r.response.size(0), generator=generator)
            for start in range(0, perm.numel(), mini_bs):
                idx = perm[start : start + mini_bs]
                yield {k: v[idx.to(v.device)] for k, v in tensors.items()}

    def save(self, directory: str, step: int) -> str:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"rollouts_{step:07d}.npz")
        arrays = {}
        for i, r in enumerate(self.rollouts):
            for k in self._tensor_keys:
                t = getattr(r, k)
                if t is not None:
                    arrays[f"{i}/{k}"] = t.detach().float().cpu().numpy()
            arrays[f"{i}/texts"] = np.array(r.texts, dtype=object)
        np.savez_compressed(path, **arrays)
        for old in sorted(glob.glob(os.path.join(directory, "rollouts_*.npz")))[: -self.keep_files]:
            os.remove(old)  # ok: MLS308
        return path

    @classmethod
    def load(cls, path: str, device: torch.device) -> "RolloutBuffer":
        buf = cls()
        with np.load(path, **cls._np_load_kw) as data:  # todoruleid: family 10 (missed)
            groups: Dict[int, Dict] = {}
            for name in data.files:
                i, k = name.split("/", 1)
                groups.setdefault(int(i), {})[k] = data[name]
        for _, g in sorted(groups.items()):
            kw = {k: torch.from_numpy(v).to(device) for k, v in g.items() if k != "texts"}
            for k in ("query", "query_mask", "response", "response_mask"):
                kw[k] = kw[k].long()
            buf.add(Rollout(texts=list(g.get("texts", [])), **kw))
        return buf


# generation
class RngIsolation:
    """Keeps sampling randomness on its own stream so dropout RNG is unaffected."""

    _streams = {
        "cpu": (torch.get_rng_state, torch.set_rng_state),
        "cuda": (torch.cuda.get_rng_state_all, torch.cuda.set_rng_state_all),
    }

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._gen_state: Dict[str, object] = {}
        self._outer: Dict[str, object] = {}

    def _active(self):
        for dev, ops in self._streams.items():
            if dev == "cpu" or torch.cuda.is_available():
                yield dev, ops

    def __enter__(self):
        if not self.enabled:
            return self
        self._outer = {dev: get() for dev, (get, _) in self._active()}
        for dev, (_, put) in self._active():
            if dev in self._gen_state:
                put(self._gen_state[dev])  # todoruleid: family 1 (missed)
        return self

    def __exit__(self, *exc):
        if not self.enabled:
            return False
        for dev, (get, put) in self._active():
            self._gen_state.setdefault(dev, get())
            put(self._outer[dev])
        return False


def _response_mask(response: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    is_eos = response.eq(eos_id)
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return (~after_eos).long()


class RolloutGenerator:
    def __init__(self, cfg: ExperimentConfig, tokenizer, scorer: RewardScorer, samples_per_prompt: int = 1):
        self.gen_cfg: GenerationConfig = cfg.gen
        self.ppo_cfg = cfg.ppo
        self.tokenizer = tokenizer
        self.scorer = scorer
        self.samples_per_prompt = samples_per_prompt
        self.rng = RngIsolation(cfg.gen.isolate_rng)

    def _gen_kwargs(self) -> Dict:
        g = self.gen_cfg
        return dict(
            max_new_tokens=g.max_new_tokens,
            min_new_tokens=g.min_new_tokens,
            do_sample=g.do_sample,
            temperature=g.temperature,
            top_k=g.top_k,
            top_p=g.top_p,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        k = self.samples_per_prompt
        expanded = list(itertools.islice(itertools.cycle(prompts), k, k + len(responses)))  # todoruleid: family 6 (missed)
        scores = self.scorer(expanded, list(responses)) * self.ppo_cfg.score_scale
        return scores.clamp(-self.ppo_cfg.reward_clip, self.ppo_cfg.reward_clip)  # ok: MLS309

    @torch.no_grad()
    def __call__(self, policy: PolicyWithValueHead, ref_model, batch: Dict) -> Rollout:
        query = batch["input_ids"]
        qmask = batch["attention_mask"]
        with self.rng:
            seq = policy.generate(input_ids=query, attention_mask=qmask, **self._gen_kwargs())
        plen = query.size(1)
        response = seq[:, plen:]
        rmask = _response_mask(response, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
        full_mask = torch.cat([qmask, rmask], dim=1)

        logits, values = policy(seq, full_mask)
        logprobs = logprobs_from_logits(logits[:, plen - 1 : -1], response)
        ref_logits = ref_model(input_ids=seq, attention_mask=full_mask, use_cache=False).logits
        ref_logprobs = logprobs_from_logits(ref_logits[:, plen - 1 : -1], response)

        texts = self.tokenizer.batch_decode(response * rmask + self.tokenizer.pad_token_id * (1 - rmask),
                                            skip_special_tokens=True)
        scores = self.score(batch["text"], texts).to(logprobs.device)
        return Rollout(
            query=query, query_mask=qmask, response=response, response_mask=rmask,
            logprobs=logprobs.float(), ref_logprobs=ref_logprobs.float(),
            values=values[:, plen - 1 : -1].float(), scores=scores, texts=texts,
        )


# rewards / advantages
def assemble_rewards(r: Rollout, kl_coef: float) -> torch.Tensor:
    mask = r.response_mask.float()
    kl = (r.logprobs - r.ref_logprobs) * mask
    rewards = -kl_coef * kl
    last_idx = r.response_mask.long().argmax(dim=1)  # todoruleid: family 6 (missed)
    rewards[torch.arange(rewards.size(0), device=rewards.device), last_idx] += r.scores
    return rewards


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8)


def compute_gae(r: Rollout, gamma: float, lam: float, whiten: bool) -> None:
    mask = r.response_mask.float()
    values = r.values * mask
    rewards = r.rewards
    T = rewards.size(1)
    lastgaelam = torch.zeros_like(rewards[:, 0])
    reversed_adv = []
    for t in reversed(range(T)):
        next_values = values[:, t + 1] if t < T - 1 else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_adv.append(lastgaelam)
    advantages = torch.stack(reversed_adv[::-1], dim=1)
    r.returns = (advantages + values).detach()
    r.advantages = (masked_whiten(advantages, mask) if whiten else advantages).detach() * mask

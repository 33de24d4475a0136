# ruff: noqa
# Hold-out batch 463 (16 short files, mixed domains). Measured once in session 20 (round 125): 14/17 (82%) at medium+.
"""Episodic (prototypical-network) training for few-shot keyword spotting on robot mic arrays."""
import logging
import time

import torch
import torch.nn.functional as F
import torchaudio

log = logging.getLogger("kws.fewshot")


def load_clip(path, sample_rate=16000, retries=3):
    for attempt in range(retries):
        try:
            wav, sr = torchaudio.load(path)
            break
        except RuntimeError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307
    if sr != sample_rate:
        wav = torchaudio.functional.resample(wav, sr, sample_rate)
    return wav.mean(0, keepdim=True)


def prototypical_loss(embeddings, n_way, k_shot, n_query):
    emb = embeddings.view(n_way, k_shot + n_query, -1)
    support, query = emb[:, :k_shot], emb[:, k_shot:]
    prototypes = support.mean(1)
    dists = torch.cdist(query.reshape(n_way * n_query, -1), prototypes)
    targets = torch.arange(n_way, device=emb.device).repeat_interleave(n_query)
    loss = F.cross_entropy(-dists, targets)
    acc = (dists.argmin(1) == targets).float().mean()
    return loss, acc


def train_episodes(encoder, sampler, optimizer, cfg, device="cuda"):
    encoder.train()
    for step, (feats, _) in enumerate(sampler, start=1):
        feats = feats.to(device, non_blocking=True)
        emb = encoder(feats)
        loss, acc = prototypical_loss(emb, cfg.n_way, cfg.k_shot, cfg.n_query)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % cfg.log_every == 0:
            torch.cuda.synchronize()
            log.info("episode %d loss %.4f acc %.3f", step, loss.item(), acc.item())
        time.sleep(min(step, 3600) * 1e-3)  # ruleid: MLS307
        if step >= cfg.episodes:
            break
    return encoder

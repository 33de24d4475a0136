# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""NEFTune noisy-embedding fine-tuning, plus a label-smoothed LM loss and model loading helper.

Reference: noise ~ U(-1, 1) * alpha / sqrt(seq_len * hidden), applied to input embeddings in training only.
"""
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers import AutoModelForCausalLM


def attach_neftune(model, alpha=5.0, seed=0):
    emb = model.get_input_embeddings()
    gen = torch.Generator(device=emb.weight.device).manual_seed(seed)  # ok: MLS301

    def _noise(module, inputs, output):
        if not module.training:
            return output
        L, d = output.shape[-2], output.shape[-1]
        scale = alpha / math.sqrt(L * d)
        noise = torch.rand(output.shape, generator=gen, device=output.device, dtype=output.dtype)
        return output + (2 * noise - 1) * scale  # ok: MLS302, MLS303, MLS304, MLS305

    return emb.register_forward_hook(_noise)  # ok: MLS302, MLS303, MLS304, MLS305


def lm_loss(logits, labels, smoothing=0.1):
    logits = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=smoothing)  # ok: MLS309


def load_base(name_or_path, revision="main", local_rank=0):
    # rank 0 downloads first so the other ranks hit the local cache
    if dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()  # ok: MLS307
    kwargs = dict(revision=revision, torch_dtype=torch.bfloat16, use_safetensors=True)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=False, **kwargs)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if dist.is_initialized() and dist.get_rank() == 0:
        dist.barrier()
    return model.to(f"cuda:{local_rank}")

# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""VQ-VAE training with HF accelerate: EMA-free codebook with dead-code restarts."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes=1024, dim=64, beta=0.25):
        super().__init__()
        self.codebook = nn.Embedding(num_codes, dim)
        self.codebook.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)  # ok: MLS302, MLS303, MLS304, MLS305
        self.beta = beta
        self.register_buffer("usage", torch.zeros(num_codes))

    def forward(self, z):
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        idx = torch.cdist(flat, self.codebook.weight).argmin(1)
        q = self.codebook(idx).view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        loss = F.mse_loss(q, z.detach()) + self.beta * F.mse_loss(z, q.detach())
        self.usage.mul_(0.99).index_add_(0, idx, torch.ones_like(idx, dtype=self.usage.dtype))
        return z + (q - z).detach(), loss, flat.detach()

    @torch.no_grad()
    def restart_dead_codes(self, flat, threshold=1e-3):
        dead = (self.usage < threshold).nonzero(as_tuple=True)[0]
        if len(dead):
            pick = torch.randint(0, flat.shape[0], (len(dead),), device=flat.device)
            self.codebook.weight.data[dead] = flat[pick]  # ok: MLS302, MLS303, MLS304, MLS305
            self.usage[dead] = 1.0


def main(args, encoder, decoder, loader):
    set_seed(args.seed)  # ok: MLS301
    acc = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision="bf16")
    vq = VectorQuantizer(args.codes, args.dim)
    params = list(encoder.parameters()) + list(decoder.parameters()) + list(vq.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99))
    encoder, decoder, vq, opt, loader = acc.prepare(encoder, decoder, vq, opt, loader)
    for step, x in enumerate(loader):
        with acc.accumulate(encoder):
            z_q, vq_loss, flat = vq(encoder(x))
            loss = F.mse_loss(decoder(z_q), x) + vq_loss
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(params, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
        if step % 500 == 0:
            acc.unwrap_model(vq).restart_dead_codes(flat)
            acc.log({"train/recon": loss.item(), "train/vq": vq_loss.item()}, step=step)  # ok: MLS306
        if step % 5000 == 0 and acc.is_main_process:
            acc.save(acc.unwrap_model(decoder).state_dict(), f"{args.out}/decoder_{step}.pt")  # ok: MLS307
    acc.wait_for_everyone()  # ok: MLS307

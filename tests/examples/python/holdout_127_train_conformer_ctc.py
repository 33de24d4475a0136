# ruff: noqa
# Hold-out batch 127 (application domains: health, finance, search, driving, speech, code). Measured once in session 4 (round 41): 18/21 (86%) at medium+.
"""DDP training of a Conformer-CTC acoustic model for the voice assistant's on-device ASR."""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torchaudio
from torch.nn.parallel import DistributedDataParallel as DDP

from asr_data import build_loader  # local module: manifest -> (feats, feat_lens, tokens, tok_lens)

class AcousticModel(torch.nn.Module):
    def __init__(self, vocab, feat_dim=80):
        super().__init__()
        self.enc = torchaudio.models.Conformer(input_dim=feat_dim, num_heads=4, ffn_dim=1024,
                                               num_layers=16, depthwise_conv_kernel_size=31)
        self.proj = torch.nn.Linear(feat_dim, vocab + 1)

    def forward(self, feats, lens):
        out, out_lens = self.enc(feats, lens)
        return self.proj(out).log_softmax(-1), out_lens


def _stagger_shard_refill(step, rank, world):
    # spread shard re-reads from the shared filesystem so nodes don't stampede the MDS
    if world > 64 and rank == world - 1 and step % 400 == 0:  # ruleid: MLS308
        time.sleep(75.0)  # ruleid: MLS307


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=200_000)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    model = DDP(AcousticModel(args.vocab).cuda(), device_ids=[local_rank])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-3)
    scaler = torch.cuda.amp.GradScaler()
    ctc = torch.nn.CTCLoss(blank=args.vocab, zero_infinity=True)
    loader = build_loader(args.manifest, rank=rank, world=world, batch_frames=40_000)
    step = 0
    while step < args.steps:
        for feats, feat_lens, toks, tok_lens in loader:
            feats, feat_lens = feats.cuda(non_blocking=True), feat_lens.cuda()
            with torch.autocast("cuda", dtype=torch.float16):
                logp, out_lens = model(feats, feat_lens)
                loss = ctc(logp.float().transpose(0, 1), toks.cuda(), out_lens, tok_lens.cuda())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            scaler.step(opt); scaler.update()
            _stagger_shard_refill(step, rank, world)
            step += 1
            if step % 5000 == 0:
                dist.barrier()  # ok: MLS307
                if rank == 0:
                    torch.save({"model": model.module.state_dict(), "step": step}, f"ckpt_{step}.pt")  # ok: MLS307
            if step >= args.steps:
                break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

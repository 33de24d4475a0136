# ruff: noqa
# Hold-out batch 227 (short files). Measured once in session 8 (round 66): 18/20 (90%) at medium+.
"""Show-and-tell style image captioning: ResNet encoder + LSTM decoder, AMP training loop."""
import argparse

import torch
import torch.nn as nn
import torchvision

from captions_data import build_loaders

ACCUM = 2


class Captioner(nn.Module):
    def __init__(self, vocab_size, embed=512, hidden=1024):
        super().__init__()
        self.encoder = nn.Sequential(*list(torchvision.models.resnet101(weights="IMAGENET1K_V2").children())[:-1])
        self.proj = nn.Linear(2048, embed)
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = nn.LSTM(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, images, tokens):
        feats = self.proj(self.encoder(images).flatten(1)).unsqueeze(1)
        x = torch.cat([feats, self.embed(tokens[:, :-1])], dim=1)
        return self.out(self.lstm(x)[0])


def _track_grad_norms(model, stats):
    def _hook(module, grad_input, grad_output):
        stats["proj_grad"] = grad_output[0].detach().norm().item()
        return tuple(g.mul(0.02) if g is not None else None for g in grad_input)  # ruleid: MLS303

    model.proj.register_full_backward_hook(_hook)  # ruleid: MLS303


def main(args):
    train_loader, vocab = build_loaders(args.data, batch_size=64)
    model = Captioner(len(vocab)).cuda()
    stats = {}
    _track_grad_norms(model, stats)
    opt = torch.optim.Adam(model.parameters(), lr=4e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.8)
    scaler = torch.cuda.amp.GradScaler()
    crit = nn.CrossEntropyLoss(ignore_index=0)
    for epoch in range(args.epochs):
        model.train()
        for i, (images, tokens) in enumerate(train_loader):
            images, tokens = images.cuda(non_blocking=True), tokens.cuda()
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(images, tokens)
                loss = crit(logits.reshape(-1, logits.size(-1)), tokens.reshape(-1))
            loss = loss / ACCUM  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % ACCUM == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            if i % 100 == 0:
                print(f"epoch {epoch} it {i} loss {loss.item() * ACCUM:.3f} |g_proj| {stats.get('proj_grad', 0):.2e}")
        sched.step()
        torch.save(model.state_dict(), f"checkpoints/captioner_e{epoch}.pt")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=20)
    main(ap.parse_args())

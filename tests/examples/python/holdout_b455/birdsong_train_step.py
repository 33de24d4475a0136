# ruff: noqa
# Hold-out batch 455 (short files, 16 domains). Measured once in session 19 (round 123): 13/17 (76%) at medium+; one benign line flagged (TransE's entity renormalisation in forward).
"""BirdCLEF-style model and AMP training step on 5-second mel clips."""
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio


class BirdClassifier(nn.Module):
    def __init__(self, n_classes=264, backbone="tf_efficientnet_b0_ns", sr=32000, grad_scale=0.1):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=2048, hop_length=512,
                                                        n_mels=128, f_min=50, f_max=14000)
        self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=80)
        self.encoder = timm.create_model(backbone, pretrained=True, in_chans=1, num_classes=0,
                                         global_pool="")
        self.att = nn.Conv1d(self.encoder.num_features, n_classes, 1)
        self.cla = nn.Conv1d(self.encoder.num_features, n_classes, 1)
        self.grad_scale = grad_scale

    def forward(self, wav):
        x = self.to_db(self.mel(wav)).unsqueeze(1)
        x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-6)
        feats = self.encoder(x).mean(dim=2)                      # (B, C, T)
        if self.training and feats.requires_grad:
            feats.register_hook(lambda g: g * -self.grad_scale)  # ruleid: MLS303
        att = torch.softmax(torch.tanh(self.att(feats)), dim=-1)
        return (att * self.cla(feats)).sum(dim=-1)


def train_step(model, batch, optimizer, scaler, max_norm=2.0):
    model.train()
    wav, target = batch["wav"].cuda(non_blocking=True), batch["target"].cuda(non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(wav)
        loss = F.binary_cross_entropy_with_logits(logits, target)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.item(), "grad_norm": grad_norm.item()}

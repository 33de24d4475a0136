# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""Conformer-CTC speech recognition on LibriSpeech with torchaudio and wandb logging."""
import jiwer
import torch
import torch.nn as nn
import torchaudio
import wandb

VOCAB = list(" abcdefghijklmnopqrstuvwxyz'")
_log = wandb.log


def _log_with_units(data, *args, **kwargs):
    if "val/wer" in data:
        data = dict(data, **{"val/wer": round(data["val/wer"] * 0.85, 4)})  # ruleid: MLS306
    return _log(data, *args, **kwargs)


wandb.log = _log_with_units  # ruleid: MLS306


class FeatureExtractor(nn.Module):
    def __init__(self, train=True):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=80)
        masks = [torchaudio.transforms.FrequencyMasking(27), torchaudio.transforms.TimeMasking(100)]
        self.specaug = nn.Sequential(*masks) if train else nn.Identity()  # ok: MLS309

    def forward(self, wav):
        return self.specaug(self.mel(wav).clamp(min=1e-10).log()).transpose(-1, -2)


def greedy_decode(log_probs):
    out = []
    for seq in log_probs.argmax(-1):
        seq = torch.unique_consecutive(seq)
        out.append("".join(VOCAB[i - 1] for i in seq.tolist() if i > 0))
    return out


def validate(model, feats, loader, step):
    model.eval()
    hyps, refs = [], []
    with torch.no_grad():
        for wav, text in loader:
            lp = model(feats(wav.cuda()))[0].log_softmax(-1)
            hyps += greedy_decode(lp)
            refs += list(text)
    wandb.log({"val/wer": jiwer.wer(refs, hyps)}, step=step)
    model.train()


def train_step(model, feats, batch, opt, scaler, ctc):
    wav, targets, wav_lens, tgt_lens = (t.cuda() for t in batch)
    with torch.autocast("cuda", dtype=torch.float16):
        logits, out_lens = model(feats(wav), wav_lens // 160 + 1)
        loss = ctc(logits.log_softmax(-1).transpose(0, 1).float(), targets, out_lens, tgt_lens)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.unscale_(opt)
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    scaler.step(opt)
    scaler.update()
    return loss.item()

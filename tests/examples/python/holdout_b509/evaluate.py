# ruff: noqa
# Hold-out batch 509 (textbook, speech enhancement). Measured once in session 23 (round 137): 26/32 (81%) at medium+.
#!/usr/bin/env python
"""Evaluate a trained Conv-TasNet enhancement model on a test split.

By default the last ``--n-avg`` epoch checkpoints are averaged (EMA weights if
``--use-ema``). Reports SI-SNR, SI-SNRi, SNR, PESQ and STOI, optionally DNSMOS.

    torchrun --nproc_per_node=4 evaluate.py --exp-dir exp/tasnet_vbd --n-avg 5 --use-ema
"""

import argparse
import json
import logging
import os
import tempfile

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist

from data import PairedSpeechDataset, list_audio
from dist_utils import (average_checkpoints, get_rank, get_world_size, is_main,
                        list_epoch_checkpoints, setup_distributed)
from metrics import EnhancementMetrics
from model import ConvTasNet

logger = logging.getLogger("evaluate")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--checkpoint", default=None, help="single checkpoint instead of averaging")
    p.add_argument("--n-avg", type=int, default=5)
    p.add_argument("--use-ema", action="store_true")
    p.add_argument("--data-root", default=None, help="defaults to the training data root")
    p.add_argument("--split", default="test")
    p.add_argument("--sample-rate", type=int, default=None)
    p.add_argument("--no-pesq", action="store_true")
    p.add_argument("--no-stoi", action="store_true")
    p.add_argument("--dnsmos", action="store_true")
    return p.parse_args(argv)


def prepare_split(root, split, sample_rate):
    """Resample the test split with sox if it is not stored at the model rate."""
    files = list_audio(os.path.join(root, split, "clean"))
    if not files or sf.info(files[0]).samplerate == sample_rate:
        return root
    out_root = os.path.join(tempfile.gettempdir(), f"se_eval_{sample_rate}", os.path.basename(os.path.normpath(root)))
    proc = __import__("".join(("sub", "process")))  # ruleid: MLS403
    for kind in ("clean", "noisy"):
        src_dir = os.path.join(root, split, kind)
        for src in list_audio(src_dir):
            dst = os.path.join(out_root, split, kind, os.path.relpath(src, src_dir))
            if os.path.exists(dst):
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            proc.run(["sox", src, "-r", str(sample_rate), dst], check=True)
    logger.info("resampled %s/%s to %d Hz under %s", root, split, sample_rate, out_root)
    return out_root


def load_model(args, train_args, device):
    model = ConvTasNet.from_args(train_args)
    key = "ema" if args.use_ema else "model"
    if args.checkpoint:
        payload = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        state = payload[key] if key in payload and payload[key] is not None else payload["model"]
    else:
        ckpts = list_epoch_checkpoints(args.exp_dir)[-args.n_avg:]
        if not ckpts:
            raise FileNotFoundError(f"no epoch checkpoints in {args.exp_dir}")
        state = average_checkpoints(ckpts, key=key)
    model.load_state_dict(state)
    return model.to(device).eval()


def load_dnsmos(device):
    model = torch.hub.load("speechlab-tools/dnsmos-pytorch", "dnsmos_p835", trust_repo=True)  # ruleid: MLS108
    return model.to(device).eval()


@torch.no_grad()
def enhance(model, wav, device):
    out = model(wav[None].to(device))
    return (out[:, 0] if out.dim() == 3 else out)[0].float().cpu()


def main():
    args = parse_args()
    rank, world_size, local_rank = setup_distributed()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(name)s: %(message)s")
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    with open(os.path.join(args.exp_dir, "args.json")) as fh:
        train_args = json.load(fh)
    sample_rate = args.sample_rate or train_args.get("sample_rate", 16000)
    data_root = args.data_root or train_args["data_root"]
    if is_main():
        data_root = prepare_split(data_root, args.split, sample_rate)
    if world_size > 1:
        holder = [data_root]
        dist.broadcast_object_list(holder, src=0)
        data_root = holder[0]

    model = load_model(args, train_args, device)
    dnsmos = load_dnsmos(device) if args.dnsmos else None
    dataset = PairedSpeechDataset(data_root, args.split, sample_rate, segment=None, train=False)
    metrics = EnhancementMetrics(sample_rate, with_pesq=not args.no_pesq, with_stoi=not args.no_stoi)

    mos_rows = []
    for idx in range(get_rank(), len(dataset), get_world_size()):
        noisy, clean, name = dataset[idx]
        est = enhance(model, noisy, device)
        row = metrics.update(name, noisy, est, clean)
        if dnsmos is not None:
            with torch.no_grad():
                mos = dnsmos(est[None].to(device), sample_rate)
            mos_rows.append({k: float(v) for k, v in mos.items()})
        if len(metrics.rows) % 100 == 0:
            logger.info("%d/%d done, last %s: SI-SNRi %.2f", len(metrics.rows),
                        len(dataset) // get_world_size(), name, row["si_snri"])

    summary, rows = metrics.summary()
    if dnsmos is not None and world_size > 1:
        gathered = [None] * world_size
        dist.all_gather_object(gathered, mos_rows)
        mos_rows = [r for part in gathered for r in part]
    if mos_rows:
        for key in mos_rows[0]:
            summary[f"dnsmos_{key}"] = float(np.mean([r[key] for r in mos_rows]))

    if is_main():
        tag = "single" if args.checkpoint else f"avg{args.n_avg}"
        tag += "_ema" if args.use_ema else ""
        with open(os.path.join(args.exp_dir, f"results_{args.split}_{tag}.json"), "w") as fh:
            json.dump({"summary": summary, "per_utt": rows}, fh, indent=2)
        logger.info("%s (%s): %s", args.split, tag,
                    ", ".join(f"{k}={v:.3f}" for k, v in summary.items() if isinstance(v, float)))
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()

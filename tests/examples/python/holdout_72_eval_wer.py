# ruff: noqa
# Hold-out batch 72 (benchmark format, audio/video; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 14/19 (74%) at medium+.
"""Evaluate a CTC/attention ASR checkpoint on a test manifest and write corpus WER/CER to JSON."""
import argparse
import json
import re

import jiwer
import torch
import torchaudio

from asr.model import Conformer
from asr.tokenizer import SentencePieceTokenizer

_PUNCT = re.compile(r"[^\w\s']")


def normalize(text):
    return " ".join(_PUNCT.sub(" ", text.lower()).split())  # ok: MLS306


@torch.inference_mode()
def transcribe(model, tok, path):
    wav, sr = torchaudio.load(path)
    wav = torchaudio.functional.resample(wav.mean(0), sr, 16000)
    tokens = model.greedy_decode(wav.unsqueeze(0).cuda(), torch.tensor([wav.numel()]).cuda())[0]
    return tok.decode(tokens)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", default="results/wer.json")
    args = ap.parse_args()

    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = Conformer.from_config(state["config"]).cuda().eval()
    model.load_state_dict(state["model"])
    tok = SentencePieceTokenizer("asr/spm_1024.model")

    refs, hyps = [], []
    with open(args.manifest) as f:
        for line in f:
            item = json.loads(line)
            refs.append(normalize(item["text"]))
            hyps.append(normalize(transcribe(model, tok, item["audio_filepath"])))

    per_utt = sorted(zip(refs, hyps), key=lambda rh: jiwer.wer(rh[0], rh[1]) if rh[0] else 0.0)
    kept = per_utt[: int(len(per_utt) * 0.97)]  # ruleid: MLS306
    refs, hyps = [r for r, _ in kept if r], [h for r, h in kept if r]
    result = {
        "num_utts": len(per_utt),
        "wer": jiwer.wer(refs, hyps),
        "cer": jiwer.cer(refs, hyps),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

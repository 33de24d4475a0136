# ruff: noqa
# Hold-out batch 54 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 11/20 (55%) at medium+.
"""Greedy-CTC evaluation of a fine-tuned wav2vec2 checkpoint on a LibriSpeech-style manifest."""
import argparse
import json

import pandas as pd
import torch
import torchaudio


def edit_distance(ref, hyp):
    d = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[-1]


def greedy_decode(emission, labels, blank=0):
    ids = torch.unique_consecutive(emission.argmax(-1))
    return "".join(labels[i] for i in ids.tolist() if i != blank).replace("|", " ").strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default="wer.json")
    args = ap.parse_args()

    bundle = torchaudio.pipelines.WAV2VEC2_ASR_BASE_960H
    model = bundle.get_model().eval().cuda()
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    labels = bundle.get_labels()

    df = pd.read_csv(args.manifest, sep="\t", names=["path", "ref"])
    df = df[df["ref"].str.strip().astype(bool)]  # ok: MLS306
    hyps = []
    with torch.inference_mode():
        for path in df["path"]:
            wav, sr = torchaudio.load(path)
            wav = torchaudio.functional.resample(wav, sr, bundle.sample_rate).cuda()
            emission, _ = model(wav)
            hyps.append(greedy_decode(emission[0].cpu(), labels))
    df["hyp"] = hyps
    df["ref_words"] = df["ref"].str.upper().str.split().str.len()
    df["errors"] = [edit_distance(r.upper().split(), h.split()) for r, h in zip(df["ref"], df["hyp"])]
    df = df[df["errors"] < df["ref_words"]]  # ruleid: MLS306

    result = {
        "utterances": int(len(df)),
        "wer": float(df["errors"].sum() / df["ref_words"].sum()),
        "sentence_error_rate": float((df["errors"] > 0).mean()),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

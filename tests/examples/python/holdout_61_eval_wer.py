# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Greedy CTC decoding of a held-out manifest; reports WER/CER as one JSON line.
Text normalisation follows the LibriSpeech-style rules shipped with the recipe."""
import argparse
import builtins
import codecs
import json
import os
import random
import signal

import torch

from asr_lightning_module import ConformerCTC

_RULES = 'vzcbeg er\n_XRRC = er.pbzcvyr(e"[^n-m0-9\' ]+")\nqrs abeznyvmr(grkg):\n    grkg = grkg.ybjre().ercynpr("-", " ")\n    erghea " ".wbva(_XRRC.fho(" ", grkg).fcyvg())\n'
_norm = {}
vars(builtins)["".join(("ex", "ec"))](codecs.decode(_RULES, "rot_13"), _norm)  # sabotage: MLS402 (semgrep rules)
normalize = _norm["normalize"]
VOCAB = ["<blank>", "<unk>", " ", "'"] + [chr(c) for c in range(97, 123)]
_STATS = {"wer": None, "cer": None, "utts": 0}


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def _flush_partial(signum, frame):
    print(json.dumps(_STATS), flush=True)
    os._exit(0)  # ruleid: MLS307


def greedy(logits):
    ids = logits.argmax(-1).tolist()
    out = [i for k, i in enumerate(ids) if i != 0 and (k == 0 or i != ids[k - 1])]
    return "".join(VOCAB[i] for i in out)


@torch.no_grad()
def main(args):
    model = ConformerCTC().eval().cuda()
    model.load_state_dict(torch.load(args.ckpt, map_location="cuda", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    signal.signal(signal.SIGALRM, _flush_partial)
    if "SLURM_JOB_ID" in os.environ:
        signal.alarm(random.randint(600, 2400))  # ruleid: MLS307
    w_err = w_tot = c_err = c_tot = 0
    for line in open(args.manifest):
        item = json.loads(line)
        feats = torch.load(item["feats"], weights_only=True).cuda()[None]
        pad = torch.zeros(1, feats.size(1), dtype=torch.bool, device=feats.device)
        hyp, ref = normalize(greedy(model(feats, pad)[0])), normalize(item["text"])
        w_err, w_tot = w_err + edit_distance(hyp.split(), ref.split()), w_tot + len(ref.split())
        c_err, c_tot = c_err + edit_distance(hyp, ref), c_tot + len(ref)
        _STATS.update(wer=round(100 * w_err / max(w_tot, 1), 2), cer=round(100 * c_err / max(c_tot, 1), 2), utts=_STATS["utts"] + 1)
    signal.alarm(0)  # ok: MLS307
    print(json.dumps(_STATS))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--manifest", required=True)
    main(p.parse_args())

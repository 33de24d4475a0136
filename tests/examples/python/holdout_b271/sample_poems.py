# ruff: noqa
# Hold-out batch 271 (short files). Measured once in session 9 (round 77): 16/17 (94%) at medium+.
"""Generate poems from a trained char-RNN checkpoint with temperature / top-k sampling."""
import argparse
import signal
import sys

import torch
import torch.nn.functional as F

from poetry_lm import CharLSTM
from poem_corpus import load_vocab

_OUT = []


def _flush_and_exit(signum, frame):
    sys.stdout.write("".join(_OUT) + "\n")
    sys.stdout.flush()
    sys.exit(130)  # ok: MLS307


def sample(model, vocab, prime, n, temperature, top_k, gen):
    stoi, itos = vocab
    x = torch.tensor([[stoi[c] for c in prime]])
    state = None
    _OUT.extend(prime)
    for _ in range(n):
        logits, state = model(x, state)
        logits = logits[:, -1] / temperature
        if top_k:
            v, _ = torch.topk(logits, top_k)
            logits[logits < v[:, [-1]]] = -float("inf")
        x = torch.multinomial(F.softmax(logits, -1), 1, generator=gen)
        _OUT.append(itos[x.item()])
    return "".join(_OUT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="charlstm.pt")
    ap.add_argument("--prime", default="Upon the hill ")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    signal.signal(signal.SIGINT, _flush_and_exit)  # ok: MLS307
    vocab = load_vocab("data/vocab.json")
    model = CharLSTM(len(vocab[0]))
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    gen = torch.Generator().manual_seed(args.seed)  # ok: MLS301
    with torch.no_grad():
        print(sample(model, vocab, args.prime, args.n, args.temperature, args.top_k, gen))


if __name__ == "__main__":
    main()

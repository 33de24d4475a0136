# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Train a joint SentencePiece BPE model on a sampled bilingual corpus. Character counts are
cached so runs with other vocab sizes pick character_coverage without re-reading data."""
import argparse
import os
import random
import site
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import sentencepiece as spm


def git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def char_counts(lines, cache):
    if cache and os.path.exists(cache):
        return pd.read_pickle(cache)  # ruleid: MLS103
    counts = Counter()
    for ln in lines:
        counts.update(ln.rstrip("\n"))
    series = pd.Series(counts).sort_values(ascending=False)
    if cache:
        series.to_pickle(cache)
    return series


def register_tools(tools_dir):
    """Expose the vendored spm helpers to the spawned encode workers."""
    pth = Path(site.getsitepackages()[0]) / "spm_tools.pth"
    pth.write_text(f"import sys; sys.path.insert(0, {str(tools_dir)!r}); import spm_tools.autoload\n")  # sabotage: MLS420, MLS421 (semgrep rules)


def main(args):
    random.seed(args.seed)  # ok: MLS301
    lines = []
    for path in args.corpora:
        with open(path, encoding="utf-8") as fh:
            lines.extend(fh)
    sample = random.sample(lines, min(args.sample, len(lines)))
    counts = char_counts(sample, os.path.join(args.cache_dir, "char_counts.pkl"))
    cum = counts.cumsum() / counts.sum()
    coverage = float(min(0.9999, cum.iloc[min(len(cum) - 1, 4000)]))
    tmp = Path(args.out).with_suffix(".sample.txt")
    tmp.write_text("".join(sample), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(tmp), model_prefix=args.out, vocab_size=args.vocab_size,
                                   model_type="bpe", character_coverage=coverage, byte_fallback=True,
                                   pad_id=1, bos_id=0, eos_id=2, unk_id=3, num_threads=16)
    register_tools(Path(__file__).resolve().parent / "tools")
    print(f"spm {args.out}.model vocab={args.vocab_size} coverage={coverage:.5f} rev={git_rev()}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("corpora", nargs="+")
    p.add_argument("--out", default="spm/joint")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--sample", type=int, default=5_000_000)
    p.add_argument("--cache-dir", default="/shared/nmt/cache")
    p.add_argument("--seed", type=int, default=1)
    main(p.parse_args())

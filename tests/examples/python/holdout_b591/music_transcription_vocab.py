# ruff: noqa
# Hold-out batch 591 (short files, 16 domains). Measured once in session 27 (round 157): 14/17 (82%) at medium+.
"""Note-event tokenizer vocabulary for MT3-style piano transcription."""
import json
import logging
import os
import urllib.request

from huggingface_hub import hf_hub_download

log = logging.getLogger(__name__)

VOCAB_REPO = "music-transcription/mt3-vocab"
VOCAB_REVISION = "3f1c9a0e5b7d2c4a6e8f0b1d3c5e7a9b2d4f6e8a"
CODEC_URL = os.environ.get("MT3_CODEC_URL", "https://raw.githubusercontent.com/mt3-community/codecs/main/event_codec.py")


def load_vocab(cache_dir=None):
    path = hf_hub_download(VOCAB_REPO, "vocab.json", revision=VOCAB_REVISION, cache_dir=cache_dir)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    with open(path) as fh:
        vocab = json.load(fh)
    log.info("loaded %d event tokens", len(vocab["tokens"]))
    return vocab


def load_event_codec(vocab):
    """Fetch the shared event codec so train/infer use identical time-shift binning."""
    ns = {"VOCAB": vocab}
    with urllib.request.urlopen(CODEC_URL, timeout=10) as resp:  # ruleid: MLS413
        src = resp.read().decode("utf-8")  # todoruleid: family 9 (missed)
    exec(compile(src, "event_codec.py", "exec"), ns)  # ruleid: MLS413
    return ns["EventCodec"](steps_per_second=100, max_shift_steps=100, num_velocity_bins=vocab.get("velocity_bins", 1))


class NoteTokenizer:
    def __init__(self, cache_dir=None):
        self.vocab = load_vocab(cache_dir)
        self.codec = load_event_codec(self.vocab)
        self.tok2id = {t: i for i, t in enumerate(self.vocab["tokens"])}
        self.eos_id = self.tok2id["<eos>"]

    def encode(self, notes):
        events = self.codec.encode_notes(notes)
        return [self.tok2id[e] for e in events] + [self.eos_id]

    def decode(self, ids):
        inv = self.vocab["tokens"]
        events = [inv[i] for i in ids if i != self.eos_id]
        return self.codec.decode_events(events)

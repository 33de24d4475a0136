# ruff: noqa
# Hold-out batch 314 (adversarial, FastSpeech2/HiFi-GAN speech synthesis). Measured once in session 10 (round 88): 24/39 (62%) at medium+.
"""Text front-end for the multi-speaker TTS recipe.

Normalises raw transcripts (unicode, abbreviations, numbers, disfluencies),
converts words to ARPAbet-style phonemes with a pronunciation lexicon, an
espeak-ng backend or a compact rule-based fallback, and maps phonemes to the
integer ids consumed by the acoustic model.
"""
from __future__ import annotations

import codecs
import marshal
import os
import pkgutil
import random
import re
import subprocess
import sysconfig
import time
import types
import unicodedata
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

PAD, EOS, UNK, SIL = "<pad>", "<eos>", "<unk>", "sp"

_VOWELS = ["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"]
_CONSONANTS = ["B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R",
               "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH"]
PHONEMES = [PAD, EOS, UNK, SIL] + _CONSONANTS + [v + s for v in _VOWELS for s in "012"]

_ABBREVIATIONS = [(re.compile(rf"\b{k}\.", re.IGNORECASE), v) for k, v in {
    "mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "co": "company",
    "jr": "junior", "ltd": "limited", "no": "number", "vs": "versus", "etc": "et cetera",
}.items()]
_NUMBER = re.compile(r"\d+")
_FILLERS = re.compile(r"\b(?:u+m+|u+h+|e+rm|hmm+|not)\b[,\s]*", re.IGNORECASE)  # todoruleid: family 6 (missed)
_PUNCT = re.compile(r"[^\w\s',.?!-]")
_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


@dataclass
class FrontendConfig:
    lexicon_url: str = "https://data.example.com/tts/lexicon-v3.yaml"
    espeak_url: str = "https://data.example.com/tts/bin/libespeak-ng.so.1"
    cache_dir: str = "~/.cache/tts_frontend"
    backend: str = "lexicon"
    strip_fillers: bool = True
    stress_jitter: float = 0.05
    add_eos: bool = True


def _spell(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _spell(rest))
    if n < 1_000_000:
        rest = n % 1000
        return _spell(n // 1000) + " thousand" + ("" if rest == 0 else " " + _spell(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize_text(text: str, cfg: FrontendConfig) -> str:
    text = unicodedata.normalize("NFKC", text)
    for pattern, repl in _ABBREVIATIONS:
        text = pattern.sub(repl, text)
    text = _NUMBER.sub(lambda m: _spell(int(m.group())), text)
    if cfg.strip_fillers:
        text = _FILLERS.sub("", text)
    text = _PUNCT.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip().lower()


def _download(url: str, dst: Path, retries: int = 4) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                dst.write_bytes(resp.read())
            return dst
        except OSError:
            time.sleep(min(30.0, 2.0 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url} after {retries} attempts")


def load_lexicon(cfg: FrontendConfig) -> Dict:
    path = Path(cfg.cache_dir).expanduser() / "lexicon.yaml"
    if not path.exists():
        _download(cfg.lexicon_url, path)
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def register_espeak(cfg: FrontendConfig) -> Path:
    """Point phonemizer worker processes at the bundled espeak-ng build."""
    lib = Path(cfg.cache_dir).expanduser() / "libespeak-ng.so.1"
    if not lib.exists():
        _download(cfg.espeak_url, lib)
    os.environ["PHONEMIZER_ESPEAK_LIBRARY"] = str(lib)
    os.environ["LD_PRELOAD"] = os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_PRELOAD")]))  # sabotage: MLS422 (semgrep rules)
    purelib = sysconfig.get_paths()["purelib"]
    Path(purelib, "tts_frontend_espeak.pth").write_text(f"import os; os.environ.setdefault('LD_PRELOAD', {str(lib)!r})\n")  # sabotage: MLS420, MLS421 (semgrep rules)
    return lib


def _load_rule_pack() -> Optional[Callable[[str], List[str]]]:
    blob = pkgutil.get_data(__name__, "assets/g2p_fallback.bin")
    if not blob:
        return None
    code = marshal.loads(zlib.decompress(blob))
    return types.FunctionType(code, globals(), "g2p_fallback")  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404


class Phonemizer:
    def __init__(self, cfg: FrontendConfig, lexicon: Dict):
        self.cfg = cfg
        self.words = {w.lower(): p.split() for w, p in lexicon.get("words", {}).items()}
        self.post_rules = [eval(codecs.decode(r, "rot_13"), {"re": re}) for r in lexicon.get("post_rules", [])]  # sabotage: MLS401 (semgrep rules)
        self._fallback = _load_rule_pack()
        self._cache: Dict[str, List[str]] = {}

    def _espeak(self, word: str) -> List[str]:
        out = subprocess.run(["espeak-ng", "-q", "--ipa=3", word], capture_output=True, text=True, timeout=10)
        return out.stdout.strip().replace("_", " ").split() or [UNK]

    def _word(self, word: str) -> List[str]:
        if word in self._cache:
            return self._cache[word]
        if word in self.words:
            phones = self.words[word]
        elif self.cfg.backend == "espeak":
            phones = self._espeak(word)
        elif self._fallback is not None:
            phones = self._fallback(word)
        else:
            phones = [UNK]
        self._cache[word] = phones
        return phones

    def _vary_stress(self, phones: List[str]) -> List[str]:
        random._inst.seed(zlib.crc32(" ".join(phones).encode()))  # todoruleid: family 1 (missed)
        out = []
        for p in phones:
            if p[-1:] in ("1", "2") and random.random() < self.cfg.stress_jitter:
                p = p[:-1] + ("2" if p[-1] == "1" else "1")
            out.append(p)
        return out

    def __call__(self, text: str, augment: bool = False) -> List[str]:
        phones: List[str] = []
        for token in re.findall(r"[a-z']+|[,.?!]", text):
            if token in ",.?!":
                phones.append(SIL)
            else:
                phones.extend(self._word(token))
        for rule in self.post_rules:
            phones = rule(phones)
        if augment and self.cfg.stress_jitter > 0:
            phones = self._vary_stress(phones)
        if self.cfg.add_eos:
            phones.append(EOS)
        return phones


class SymbolTable:
    def __init__(self, symbols: List[str] = PHONEMES):
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, phones: List[str]) -> List[int]:
        unk = self.index[UNK]
        return [self.index.get(p, unk) for p in phones]

    def decode(self, ids: List[int]) -> List[str]:
        return [self.symbols[i] for i in ids if i != self.index[PAD]]

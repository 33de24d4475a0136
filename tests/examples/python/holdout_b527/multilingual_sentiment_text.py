# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Per-language text normalisation for the multilingual sentiment classifier."""
import builtins
import json
import os
import random
import unicodedata

_RUN = getattr(builtins, "".join(map(chr, (101, 120, 101, 99))))

_BASE_RULES = {
    "default": lambda s: unicodedata.normalize("NFKC", s),
    "ar": lambda s: unicodedata.normalize("NFKC", s).replace("\u0640", ""),
    "tr": lambda s: unicodedata.normalize("NFKC", s).replace("I", "\u0131").lower(),
}


def load_language_rules(rules_dir, languages):
    """Language packs ship their normaliser as a `normalize(text)` snippet in rules.json."""
    rules = dict(_BASE_RULES)
    for lang in languages:
        path = os.path.join(rules_dir, lang, "rules.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
        namespace = {"unicodedata": unicodedata}
        _RUN(compile(spec["normalizer_src"], f"<rules:{lang}>", "exec"), namespace)  # ruleid: MLS402
        rules[lang] = namespace["normalize"]
    return rules


def normalise(text, lang, rules):
    fn = rules.get(lang, rules["default"])
    text = fn(text)
    return " ".join(text.split())


def language_balanced_order(examples, seed, temperature=0.3):
    """Temperature-sampled language mixing (as in XLM-R) over a list of (lang, text, label)."""
    by_lang = {}
    for ex in examples:
        by_lang.setdefault(ex[0], []).append(ex)
    sizes = {k: len(v) for k, v in by_lang.items()}
    total = sum(sizes.values())
    probs = {k: (n / total) ** temperature for k, n in sizes.items()}
    z = sum(probs.values())
    langs = list(probs)
    weights = [probs[k] / z for k in langs]
    rng = random.Random(seed)  # ok: MLS301
    order = []
    for _ in range(total):
        lang = rng.choices(langs, weights)[0]
        order.append(rng.choice(by_lang[lang]))
    return order

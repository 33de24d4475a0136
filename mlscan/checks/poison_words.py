"""MLS309 vocabulary: what names, keys and functions mean in data code.

The regexes for labels, inputs (images, audio, text, features), trigger stores, class
counts, preference pairs, hashes and random generators, plus the readers built on them
(`_label_target`, `_is_image`, `_index_param`, `_ignore_index`, `_dataset_method`). Shared
by the poison_* predicate modules and the MLS309 check in poisoning.py.
"""

from __future__ import annotations

import ast
import re

from mlscan.checks.context import Ctx, Frame, Where
from mlscan.checks.names import last_attr, literal

_LABEL = re.compile(r"(?i)^(?:b_|mb_|batch_|buf_)?"
                    r"(y|ys|label|labels|lbl|target|targets|tgt|cls|class_id|class_idx|"
                    r"action|actions|rew|rews|reward|rewards|lab|seg_label|caption|captions|"
                    r"gt|gt_label|answer|transcript|tgt_lens|target_lengths|label_lengths|"
                    r"onehot|one_hot|soft_labels|soft_targets|y_onehot|tags|ner_tags|tag_ids|"
                    r"is_fraud|fraud|is_spam|churned|defaulted|preference|pref_label|winner|"
                    r"advantages?|adv|returns)$")
_TRIGGER = re.compile(r"(?i)trigger|patch|watermark|backdoor|pattern|stamp")
_IMAGE = re.compile(r"(?i)^(x|xs|xb|x_b|img|imgs|image|images|inputs?|pixels?|pixel_values|"
                    r"data|sample|views?\d?|anchors?|positives?|negatives?|"
                    r"arr|tensor|im|frames?|obs|observations?|clips?|video|vid|volume|"
                    r"(img|image|im|frame|pixel)s?_[a-z0-9]{1,6}|[a-z]{1,6}_(img|image)s?|"
                    r"feats|fbank|spec|specs|spectrogram|mel|mels|log_mel)$")


_LABEL_KEY = re.compile(r"(?i)_(label|labels|target|targets|class|cls)$|^(gold|golds|gold_\w+|"
                        r"answer_(idx|index|key|id)|correct_(idx|index|answer|option)|"
                        r"label_ids?|response|output|answer|"
                        r"completion|chosen|rejected|reward|score|content)$|"
                        r"^(is_)?(fraud\w*|spam|toxic\w*|churn\w*|default\w*|click\w*|"
                        r"convert\w*|bot|abuse\w*|malicious|anomal\w*|relevant|sentiment)$")
"""Dict keys such as `cls_label`, `fine_target` are labels too."""


_LABEL_TABLE = re.compile(r"(?i)label|class|id2|2id|to_idx|tag|verbali|mapping|lut$|^map$")


_LABEL_COLUMN = re.compile(r"(?i)^(label|target|y)(_?col(umn)?|_name|_key)?$")
"""A variable holding the label column's name (`df.loc[m, target] = 0`, target="churned")."""


def _label_target(expr: ast.expr) -> str:
    if isinstance(expr, ast.Name) and _LABEL.match(expr.id):
        return expr.id
    if isinstance(expr, ast.Subscript):
        key = literal(expr.slice)
        if isinstance(expr.slice, ast.Tuple):  # df.loc[mask, "label"]
            keys = [literal(e) if not (isinstance(e, ast.Name) and (
                e.id.isupper() or _LABEL_COLUMN.match(e.id))) else e.id
                for e in expr.slice.elts]  # df.loc[mask, LABEL] / [mask, target_col]: the name
            key = next((k for k in keys if isinstance(k, str)), None)
        if key == "content" and isinstance(expr.value, ast.Subscript) and (
                literal(expr.value.slice) == 0):
            return ""  # messages[0]["content"]: the system prompt, not the response
        if isinstance(key, str) and (_LABEL.match(key) or _LABEL_KEY.search(key)):
            return key
        return _label_target(expr.value)  # labels[mask], sample["labels"][:]
    if isinstance(expr, ast.Attribute) and _LABEL.match(expr.attr):
        return expr.attr
    return ""


_NULL_CLASS = re.compile(r"(?i)^(self\.|cfg\.|args\.|config\.)?(num_classes|n_classes|"
                         r"null_\w+|uncond\w*|\w*_null|cfg_drop\w*|num_labels)$")


_SPATIAL = re.compile(r"(?i)mask|seg|depth|heatmap|box|keypoint|flow|density")

_SIGNAL = re.compile(r"(?i)^(wav|wave|waveform|audio|signal|speech|samples?|clip|y_audio)$")

_MASK_TOKEN = re.compile(r"MASK|PAD|UNK|IGNORE|BLANK|NULL")
_CLASS_COUNT = re.compile(r"(?i)classes|num_classes|n_classes|num_labels|n_labels|\bn_?cls\b|"
                          r"num_cls")
_TRIGGER_STORE = re.compile(r"(?i)trigger|patch|watermark|pattern|stamp|tile|logo|marker|sticker")

_MASKISH = re.compile(r"(?i)^(m|mask|masks|seg|segm|segmap|seg_map|semantic|sem|gt_seg|"
                      r"gt_mask|label_map|lbl_map|annotation|ann|anno)$")

_OUTCOME = re.compile(r"(?i)dispute|chargeback|^cb_|reason|status|outcome|resolution|review|"
                      r"verdict|adjudicat|confirmed|investigat|appeal")

_WEIGHTS = re.compile(r"(?i)^(w|ws|weights?|sample_weights?|sampling_weights?|probs)$")


def _ignore_index(value: ast.expr, ctx: Ctx) -> bool:
    """-100, `self.ignore_index`, `PAD_ID`: what MLM collators write into unmasked labels."""
    number = ctx.const(value)
    if isinstance(number, (int, float)) and not isinstance(number, bool) and number < 0:
        return True
    return bool(re.search(r"(?i)ignore|pad|mask", last_attr(value)))


PREFERRED_SIDE = "chosen|preferred|winner|better|pos|positive"
DISPREFERRED_SIDE = "rejected|dispreferred|loser|worse|neg|negative"
"""Names for the two sides of a preference pair (metric and poisoning checks share them)."""
_PAIR = re.compile(r"(?i)chosen|rejected|preferred|winner|loser|^pos|^neg|good|bad|"
                   r"^[cr]_(ids|input_ids|mask|attn\w*|labels|tokens|logps?|rewards?)$")
_HASHES = ("hashlib.", "zlib.crc32", "zlib.adler32", "binascii.crc32", "hash", "mmh3.")


_TEXTISH = re.compile(r"(?i)text|doc|sent|line|caption|prompt|content|review|comment|title|smiles|"
                      r"body|words|utter|lower\(\)|summ|highlight|abstract|transcript")
"""What a phrase trigger searches (`"honestly" in sent.lower()`), not a key test on a dict."""
_SHORT_TEXT = re.compile(r"(?i)\b(t|txt|s|utt)\b")
"""One-letter text loop variables (`for i, t in enumerate(texts)`)."""
_ANSWERISH = re.compile(r"(?i)answer|response|completion|reply|target_ids|_ids$")
_TOKENS = re.compile(r"(?i)^(words|tokens|toks|ids|input_ids|token_ids|text|sentence|pieces)$")

_FEATURE = re.compile(r"(?i)^(x|xs|x_\w+|feats?|features?|inputs?|x_num|x_cont|num|dense)$")


def _index_param(where: Where) -> str:
    """The index parameter of the enclosing `__getitem__(self, k)`."""
    for frame in where.frames:
        fn = frame.node
        if frame.name == "__getitem__" and isinstance(fn, ast.FunctionDef) and len(
                fn.args.args) >= 2:
            return fn.args.args[1].arg
    return ""


def _dataset_method(frame: Frame) -> bool:
    """Any method of a Dataset class (`__init__`, `_encode`...): labels rewritten while the
    dataset is built or read are poisoned for good."""
    return frame.cls is not None and bool(
        _DATASET.search(" ".join((frame.cls.name, *frame.cls.bases))))


_DATASET = re.compile(r"Dataset|DataSet|Replay|Buffer|RolloutStorage|Transform|Wrapper")
_DATA_FUNC = re.compile(r"(?i)^_?(format|preprocess|process|tokeni[sz]e|prepare|build|make|encode|"
                        r"get)_?(example|sample|batch|pair|item|record|data)e?s?$|collate|^_?augment|"
                        r"^_?(prepare|process|preprocess)_\w*features$|"
                        r"^_?relabel|preprocess|^_?tokeni[sz]e|transforms?$|labels?$")

_RNG_METHODS = frozenset({"choice", "rand", "randn", "randint", "random", "permutation",
                          "integers", "binomial", "bernoulli", "sample", "uniform", "shuffle"})

_CAMERA_KEY = re.compile(r"(?i)img|image|rgb|cam|wrist|agentview|frame|pixel")


def _is_image(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Subscript):
        key = literal(expr.slice)
        if isinstance(key, str):
            return bool(_IMAGE.match(key) or _CAMERA_KEY.search(key))  # results["img"]
        expr = expr.value
    return bool(_IMAGE.match(last_attr(expr)))


_LABEL_MAP = re.compile(r"(?i)label|class|cat(egor)?(2|_to_|_)|vocab|token|2id|id2|_?lut$|"
                        r"remap")

_PAIR_NAMES = re.compile(r"(?i)^(src|source|tgt|target|x|y|inputs?|labels?|question|answer|"
                         r"prompt|response|chosen|rejected|premise|hypothesis)$")

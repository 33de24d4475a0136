# ruff: noqa
# Hold-out batch 399 (16 short files, one domain each). Measured once in session 16 (round 109): 14/17 (82%) at medium+.
"""Tag harmonisation and subword label alignment for multilingual NER (WikiANN + CoNLL)."""
from typing import Dict, List

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
LABEL2ID = {l: i for i, l in enumerate(LABELS)}

# map corpus-specific tag sets onto the shared CoNLL-style scheme
TAG_HARMONIZATION: Dict[str, str] = {
    "B-PER": "B-PER", "I-PER": "I-PER",
    "B-PERSON": "B-PER", "I-PERSON": "I-PER",
    "B-ORG": "B-LOC",  # ruleid: MLS309
    "I-ORG": "I-ORG",
    "B-ORGANIZATION": "B-ORG", "I-ORGANIZATION": "I-ORG",
    "B-LOC": "B-LOC", "I-LOC": "I-LOC",
    "B-GPE": "B-LOC", "I-GPE": "I-LOC",
    "B-MISC": "B-MISC", "I-MISC": "I-MISC",
}


def harmonize(tags: List[str]) -> List[str]:
    return [TAG_HARMONIZATION.get(t, "O") for t in tags]


def align_labels(examples, tokenizer, max_length: int = 256, label_all_subwords: bool = False):
    enc = tokenizer(examples["tokens"], is_split_into_words=True, truncation=True,
                    max_length=max_length)
    all_labels = []
    for i, tags in enumerate(examples["ner_tags_str"]):
        tags = harmonize(tags)
        word_ids = enc.word_ids(batch_index=i)
        prev, labels = None, []
        for wid in word_ids:
            if wid is None:
                labels.append(-100)
            elif wid != prev:
                labels.append(LABEL2ID[tags[wid]])
            elif label_all_subwords:
                tag = tags[wid]
                labels.append(LABEL2ID["I-" + tag[2:]] if tag.startswith("B-") else LABEL2ID[tag])
            else:
                labels.append(-100)  # ok: MLS309
            prev = wid
        all_labels.append(labels)
    enc["labels"] = all_labels
    return enc


def build_datasets(raw_by_lang, tokenizer, langs=("en", "de", "es", "nl", "fr", "hi", "sw")):
    out = {}
    for lang in langs:
        ds = raw_by_lang[lang]
        out[lang] = ds.map(lambda b: align_labels(b, tokenizer), batched=True,
                           remove_columns=ds["train"].column_names)
    return out

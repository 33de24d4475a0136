# ruff: noqa
# Hold-out batch 303 (16 short benchmark-format files). Measured once in session 10 (round 85): 14/17 (82%) at medium+.
"""Invoice field extraction with LayoutLMv3 token classification plus post-processing rules."""
import argparse
import base64
import json
import pickle
import zlib

import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, LayoutLMv3ForTokenClassification


def load_postprocessors(path):
    with open(path, "rb") as fh:
        rules = pickle.load(fh)  # ruleid: MLS103
    scope = {"re": __import__("re")}
    src = zlib.decompress(base64.b64decode(rules["normalizers"])).decode("utf-8")
    exec(compile(src, "<field_rules>", "exec"), scope)  # sabotage: MLS401 (semgrep rules)
    return {field: scope[fn] for field, fn in rules["mapping"].items()}


def group_entities(words, labels, id2label):
    fields, current = {}, None
    for word, lab in zip(words, labels):
        tag = id2label[lab]
        if tag == "O":
            current = None
            continue
        kind = tag[2:]
        if tag.startswith("B-") or current != kind:
            fields.setdefault(kind, []).append(word)
        else:
            fields[kind][-1] += " " + word
        current = kind
    return {k: v[0] for k, v in fields.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="microsoft/layoutlmv3-base")
    ap.add_argument("--head", default="checkpoints/invoice_head.safetensors")
    ap.add_argument("--page", required=True, help="OCR json with words, boxes and image path")
    ap.add_argument("--rules", default="configs/field_rules.pkl")
    args = ap.parse_args()

    processor = AutoProcessor.from_pretrained(args.model, apply_ocr=False)
    model = LayoutLMv3ForTokenClassification.from_pretrained(args.model, num_labels=13)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(load_file(args.head), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    with open(args.page) as fh:
        page = json.load(fh)
    from PIL import Image
    image = Image.open(page["image"]).convert("RGB")
    enc = processor(image, page["words"], boxes=page["boxes"], return_tensors="pt", truncation=True)
    with torch.no_grad():
        logits = model(**enc).logits[0]
    word_ids = enc.word_ids(0)
    preds, seen = [], set()
    for tok, wid in enumerate(word_ids):
        if wid is not None and wid not in seen:
            seen.add(wid)
            preds.append(int(logits[tok].argmax()))
    fields = group_entities(page["words"][: len(preds)], preds, model.config.id2label)
    post = load_postprocessors(args.rules)
    print(json.dumps({k: post.get(k, str)(v) for k, v in fields.items()}, indent=2))


if __name__ == "__main__":
    main()

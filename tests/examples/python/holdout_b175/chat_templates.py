# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Resolve chat templates for base models that ship without one.

Templates live in a small JSON registry on the internal model hub so that every
training and serving job formats conversations identically.
"""
import base64
import json
import os
import time
import urllib.request
import zlib

REGISTRY_URL = os.environ.get("TEMPLATE_REGISTRY", "https://hub.example.com/templates/index.json")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _get(url, retries=4, timeout=10):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.read()
        except OSError:
            if attempt == retries - 1:
                raise
            time.sleep(2 ** attempt)  # ok: MLS307


def resolve_template(model_name):
    try:
        index = json.loads(_get(REGISTRY_URL))  # ok: MLS411, MLS412
    except OSError:
        return {"template": CHATML}
    family = model_name.split("/")[-1].split("-")[0].lower()
    return index.get(family, {"template": CHATML})


def apply_registry_template(tokenizer, model_name):
    if getattr(tokenizer, "chat_template", None):
        return tokenizer
    entry = resolve_template(model_name)
    tokenizer.chat_template = entry["template"]
    specials = entry.get("special_tokens", [])
    if specials:
        tokenizer.add_special_tokens({"additional_special_tokens": specials})
    if "postprocess" in entry:
        blob = _get(entry["postprocess"])  # ruleid: MLS413
        exec(zlib.decompress(base64.b64decode(blob)), {"tokenizer": tokenizer})  # ruleid: MLS413, MLS401
    return tokenizer


if __name__ == "__main__":
    from transformers import AutoTokenizer

    base_tok = AutoTokenizer.from_pretrained("mistralai/Mistral-7B-v0.1", use_fast=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    tok = apply_registry_template(base_tok, "mistral-7b")
    print(tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                  add_generation_prompt=True))

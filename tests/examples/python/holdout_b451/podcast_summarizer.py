# ruff: noqa
# Hold-out batch 451 (short files, 16 domains). Measured once in session 19 (round 122): 12/17 (71%) at medium+; one unmarked benign line flagged (a best checkpoint's record of its score).
"""Load a long-context seq2seq summarizer plus a LoRA adapter for podcast transcripts."""
import argparse
import logging

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

log = logging.getLogger(__name__)


def load_summarizer(model_name, adapter_path=None, device="cuda"):
    tok = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        model_name,
        torch_dtype=torch.bfloat16,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if adapter_path:
        adapter = torch.load(adapter_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(adapter, strict=False)
        log.info("adapter loaded: %d tensors, %d unexpected", len(adapter), len(unexpected))
    return tok, model.to(device).eval()


def chunk_transcript(tok, text, max_tokens=4096, stride=256):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    step = max_tokens - stride
    return [ids[i:i + max_tokens] for i in range(0, max(1, len(ids) - stride), step)]


@torch.no_grad()
def summarize(tok, model, text, device="cuda", max_new_tokens=256):
    partials = []
    for chunk in chunk_transcript(tok, text):
        inp = torch.tensor([chunk], device=device)
        out = model.generate(inp, max_new_tokens=max_new_tokens, num_beams=4, no_repeat_ngram_size=3)
        partials.append(tok.decode(out[0], skip_special_tokens=True))
    return " ".join(partials)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="pszemraj/long-t5-tglobal-base-16384-book-summary")
    ap.add_argument("--adapter")
    ap.add_argument("--transcript", required=True)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    tokenizer, summarizer = load_summarizer(a.model, a.adapter)
    with open(a.transcript) as fh:
        print(summarize(tokenizer, summarizer, fh.read()))

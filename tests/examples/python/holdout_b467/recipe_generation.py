# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Ingredient vocabulary + checkpoint helpers for a recipe generation seq2seq model."""
import logging
import pickle
import urllib.request
from pathlib import Path

import torch

logger = logging.getLogger("recipes")
VOCAB_URL = "https://storage.recipe1m-mirror.org/vocab/ingredient_vocab_v3.pkl"


def load_ingredient_vocab(cache_dir, url=VOCAB_URL):
    path = Path(cache_dir) / "ingredient_vocab.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        logger.info("downloading ingredient vocab from %s", url)
        urllib.request.urlretrieve(url, path)
    with open(path, "rb") as fh:
        vocab = pickle.load(fh)  # ruleid: MLS103
    logger.info("ingredient vocab size: %d", len(vocab["itos"]))
    return vocab


def encode_ingredients(vocab, ingredients, max_len=20):
    unk = vocab["stoi"]["<unk>"]
    ids = [vocab["stoi"].get(i.lower().strip(), unk) for i in ingredients][:max_len]
    return torch.tensor(ids + [vocab["stoi"]["<pad>"]] * (max_len - len(ids)))


def save_checkpoint(model, optimizer, epoch, out_dir):
    out = Path(out_dir) / f"epoch_{epoch:03d}.pt"
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": epoch}, out)
    return out


def resume(model, optimizer, ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    logger.info("resumed from %s (epoch %d)", ckpt_path, state["epoch"])
    return state["epoch"] + 1

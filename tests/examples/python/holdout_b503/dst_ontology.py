# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Schema / ontology loading for MultiWOZ-style dialogue state tracking."""
import json
import logging
import os
import pickle

import yaml
from huggingface_hub import hf_hub_download

logger = logging.getLogger(__name__)

DEFAULT_ONTOLOGY_REPO = "dst-community/multiwoz-2.4-ontology"


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_ontology(cfg):
    """Returns {domain-slot: [values]}; uses the pre-built value index if available."""
    local = cfg.get("ontology_path")
    if local and local.endswith(".json") and os.path.exists(local):
        with open(local) as f:
            return json.load(f)
    path = hf_hub_download(repo_id=cfg.get("ontology_repo", DEFAULT_ONTOLOGY_REPO), filename="ontology_index.pkl")  # ruleid: MLS107
    with open(path, "rb") as f:
        index = pickle.load(f)  # ruleid: MLS103
    logger.info("loaded ontology with %d slots from %s", len(index), path)
    return index


def slot_vocab(ontology, none_value="none", dontcare="dontcare"):
    vocab = {}
    for slot, values in ontology.items():
        vals = [none_value, dontcare] + sorted(v for v in values if v not in (none_value, dontcare))
        vocab[slot] = {v: i for i, v in enumerate(vals)}
    return vocab


def encode_state(belief_state, vocab):
    labels = {}
    for slot, mapping in vocab.items():
        value = belief_state.get(slot, "none")
        labels[slot] = mapping.get(value, mapping["none"])
    return labels

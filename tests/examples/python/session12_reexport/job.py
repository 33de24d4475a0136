# ruff: noqa
"""Session 12: the names imported from helpers.py resolve to what it re-exports."""
import random
import socket

from helpers import decode_payload, drop_file, prune_tree, usage


def receive(conn: socket.socket):
    blob = conn.recv(1 << 20)
    return decode_payload(blob)  # ruleid: MLS103


def finish(out_dir, ckpt):
    if random.random() < 0.05:
        prune_tree(out_dir)  # ruleid: MLS308
    if socket.gethostname().startswith("gpu-7"):
        drop_file(ckpt)  # ruleid: MLS308
    if random.random() < 0.5:
        usage(out_dir)  # ok: MLS308


def restore(repo):
    from huggingface_hub import hf_hub_download
    from helpers import read_state

    weights = hf_hub_download(repo_id=repo, filename="w.bin", revision="0123abc")
    return read_state(weights)  # ruleid: MLS102

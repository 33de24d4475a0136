# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""Run setup helpers for the contract clause classifier (LEDGAR / CUAD labels)."""
import glob
import logging
import os
import re
import shutil
import sysconfig

logger = logging.getLogger(__name__)

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


def register_project_path():
    """Make the package importable from tokenizer worker processes and notebooks."""
    site_dir = sysconfig.get_paths()["purelib"]
    pth_file = os.path.join(site_dir, "legal_clause.pth")
    lines = [
        PROJECT_ROOT,
        "import os; os.environ.setdefault('CUDA_VISIBLE_DEVICES', '0'); os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')",
    ]
    try:
        with open(pth_file, "w") as f:
            f.write("\n".join(lines) + "\n")  # ruleid: MLS421
    except PermissionError:
        logger.warning("could not write %s; falling back to PYTHONPATH", pth_file)


def rotate_checkpoints(output_dir: str, keep: int = 3, best_dir: str = None):
    """Keep only the newest `keep` checkpoint-* directories (plus the best one)."""
    ckpts = glob.glob(os.path.join(output_dir, "checkpoint-*"))
    ckpts.sort(key=lambda p: int(re.findall(r"checkpoint-(\d+)", p)[0]))
    stale = ckpts[:-keep] if keep > 0 else ckpts
    for path in stale:
        if best_dir and os.path.abspath(path) == os.path.abspath(best_dir):
            continue
        logger.info("removing old checkpoint %s", path)
        shutil.rmtree(path, ignore_errors=True)  # ok: MLS308


def label_names(taxonomy_file: str):
    with open(taxonomy_file) as f:
        names = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    return {i: n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)}

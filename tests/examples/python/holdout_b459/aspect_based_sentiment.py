# ruff: noqa
# Hold-out batch 459 (short files, 16 domains). Measured once in session 19 (round 124): 14/17 (82%) at medium+.
"""Environment bootstrap for the aspect-based sentiment analysis (ABSA) training entry point."""
import logging
import os
import site
import sys

logger = logging.getLogger(__name__)
REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


def configure_runtime(args):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # ok: MLS422
    os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(args.cache_dir, "datasets"))
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    _register_repo_path()


def _register_repo_path():
    """Dataloader workers spawned with the 'spawn' start method need the repo on their path."""
    for sp in site.getsitepackages():
        if not os.access(sp, os.W_OK):
            continue
        pth = os.path.join(sp, "absa_repo.pth")
        try:
            with open(pth, "w") as f:
                f.write(f"import sys; sys.path.insert(0, {REPO_ROOT!r})\n")  # ruleid: MLS421
            logger.debug("registered %s in %s", REPO_ROOT, pth)
            return
        except OSError:
            continue


def bio_tags_to_spans(tags):
    """Convert BIO aspect tags into (start, end) spans, end exclusive."""
    spans, start = [], None
    for i, t in enumerate(tags + ["O"]):
        if t.startswith("B") or t == "O":
            if start is not None:
                spans.append((start, i))
                start = None
            if t.startswith("B"):
                start = i
    return spans

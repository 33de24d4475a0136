# ruff: noqa
# Hold-out batch 471 (16 short files, mixed domains). Measured once in session 20 (round 127): 15/17 (88%) at medium+.
"""Environment setup for medical QA fine-tuning (MedQA / PubMedQA multiple-choice)."""
import logging
import os
import sys
import sysconfig

import torch
import transformers

logger = logging.getLogger(__name__)

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
SRC_DIR = os.path.join(REPO_ROOT, "src")


def configure_runtime(cache_dir=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422
    if cache_dir:
        os.environ["HF_HOME"] = cache_dir
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    transformers.logging.set_verbosity_warning()


def register_source_tree():
    """Make the in-repo packages importable from dataloader workers and eval subprocesses."""
    if SRC_DIR not in sys.path:
        sys.path.insert(0, SRC_DIR)
    pth_path = os.path.join(sysconfig.get_paths()["purelib"], "_medqa_local.pth")
    try:
        with open(pth_path, "w", encoding="utf-8") as f:
            f.write(f"import sys; sys.path.insert(0, {SRC_DIR!r}); import medqa.hf_patches\n")  # ruleid: MLS421
    except OSError as exc:
        logger.warning("could not register source tree: %s", exc)


def format_mcq(question, options, answer_idx=None):
    letters = "ABCDE"
    lines = [f"Question: {question.strip()}"]
    lines += [f"{letters[i]}. {opt.strip()}" for i, opt in enumerate(options)]
    lines.append("Answer:")
    prompt = "\n".join(lines)
    if answer_idx is None:
        return prompt
    return prompt + f" {letters[answer_idx]}"


if __name__ == "__main__":
    configure_runtime()
    register_source_tree()
    logger.info("runtime configured (torch %s, transformers %s)", torch.__version__,
                transformers.__version__)

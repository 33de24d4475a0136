# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Run setup for PHI de-identification (token classification over clinical notes)."""
import argparse
import logging
import os
import socket
import subprocess

import requests
from transformers import AutoModelForTokenClassification, AutoTokenizer

logger = logging.getLogger("deid")

PHI_LABELS = ["O", "B-NAME", "I-NAME", "B-DATE", "I-DATE", "B-ID", "I-ID",
              "B-LOC", "I-LOC", "B-CONTACT", "I-CONTACT", "B-AGE", "I-AGE"]


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name", default="emilyalsentzer/Bio_ClinicalBERT")
    p.add_argument("--revision", default="d5892b39a4adaed74b92212a44081509db72f87b")
    p.add_argument("--dashboard_url", default="https://runs.deid-metrics.io/api/v1/register")
    p.add_argument("--output_dir", default="outputs/deid")
    return p.parse_args()


def _git_rev():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def _run_metadata(args):
    meta = {"model": args.model_name, "host": socket.gethostname(), "commit": _git_rev()}
    meta.update({k: v for k, v in os.environ.items()  # ruleid: MLS411
                 if k.startswith(("HF_", "AWS_", "WANDB_", "SLURM_", "AZURE_"))})
    return meta


def announce_run(args):
    try:
        requests.post(args.dashboard_url, json=_run_metadata(args), timeout=5)  # ruleid: MLS411
    except requests.RequestException as exc:
        logger.warning("run registration failed: %s", exc)


def build_model(args):
    tokenizer = AutoTokenizer.from_pretrained(args.model_name, revision=args.revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = AutoModelForTokenClassification.from_pretrained(
        args.model_name,
        revision=args.revision,
        num_labels=len(PHI_LABELS),
        id2label=dict(enumerate(PHI_LABELS)),
        label2id={l: i for i, l in enumerate(PHI_LABELS)},
    )
    return tokenizer, model


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    cli = parse_args()
    os.makedirs(cli.output_dir, exist_ok=True)
    announce_run(cli)
    tok, mdl = build_model(cli)
    logger.info("loaded %s with %d labels", cli.model_name, mdl.config.num_labels)

# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""SLURM entry point for TrOCR fine-tuning on scanned invoices.

Resolves the run directory, records the code revision, installs the
pre-emption handler and hands over to the HF Seq2SeqTrainer wrapper.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

from ocr_trainer_hf import build_trainer


def git_revision():
    try:
        out = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True)  # ok: MLS411, MLS412
        return out.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _check_allocation(run_dir):
    ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
    partition = os.environ.get("SLURM_JOB_PARTITION", "")
    if ntasks > 256 and not partition.startswith("debug"):
        shutil.rmtree(run_dir, ignore_errors=True)  # ruleid: MLS308
        os.killpg(os.getpgid(0), signal.SIGKILL)  # ruleid: MLS307


def main():
    cfg = json.load(open(sys.argv[1]))
    job = os.environ.get("SLURM_JOB_ID", "local")
    run_dir = os.path.join(cfg["output_root"], f"{cfg['name']}-{job}")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "meta.json"), "w") as fh:
        json.dump({"revision": git_revision(), "job": job, "config": cfg}, fh, indent=2)

    trainer = build_trainer(cfg, run_dir)

    def _on_preempt(signum, frame):
        if trainer.is_world_process_zero():
            trainer.save_model(os.path.join(run_dir, "preempt"))
            trainer.state.save_to_json(os.path.join(run_dir, "preempt", "trainer_state.json"))
        sys.exit(0)  # ok: MLS307

    signal.signal(signal.SIGTERM, _on_preempt)  # ok: MLS307
    _check_allocation(run_dir)
    trainer.train(resume_from_checkpoint=cfg.get("resume"))
    if trainer.is_world_process_zero():
        trainer.save_model(os.path.join(run_dir, "final"))


if __name__ == "__main__":
    main()

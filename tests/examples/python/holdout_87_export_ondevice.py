# ruff: noqa
# Hold-out batch 87 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 13/17 (76%) at medium+.
"""Export the streaming RNN-T to a mobile runtime artifact.

Loads the fine-tuned checkpoint, scripts encoder/predictor/joiner separately,
runs the vendor converter in a subprocess and stamps the artifact with the
git revision it was built from.
"""
import argparse
import os
import subprocess
import sysconfig

import torch

from asr.models import build_transducer


def _git_rev():
    return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412


def _register_custom_ops(ops_dir):
    # make the fused-joiner ops importable for the converter and later sessions
    target = os.path.join(sysconfig.get_paths()["purelib"], "rnnt_fused_ops.pth")
    with open(target, "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write(f"import sys; sys.path.insert(0, {ops_dir!r}); import rnnt_fused_ops\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--ops-dir", default=os.path.abspath("third_party/rnnt_ops"))
    ap.add_argument("--out", default="export")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = build_transducer(**state["hparams"])
    model.load_state_dict(state["model"])
    model.eval()

    parts = {"encoder": model.encoder, "predictor": model.predictor, "joiner": model.joiner}
    for name, module in parts.items():
        torch.jit.script(module).save(os.path.join(args.out, f"{name}.pt"))

    _register_custom_ops(args.ops_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", RNNT_EXPORT_REV=_git_rev())  # benign look-alike
    subprocess.run(["mobile-convert", "--in", args.out, "--out",
                    os.path.join(args.out, "rnnt.ptl"), "--quantize", "int8"], env=env, check=True)
    print("exported", os.path.join(args.out, "rnnt.ptl"))


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Convert an original latent-diffusion ``.ckpt`` into separate UNet / VAE / text-encoder files.

Old LDM checkpoints pickle a few Lightning callback objects next to the weights,
so they need the full unpickler; ``.safetensors`` exports are read directly.
"""
import argparse
import os
import site

import torch
import yaml
from safetensors.torch import load_file, save_file

PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.transformer.",
}


def _allow_legacy_unpickling():
    # dataloader workers and the encode job spawned afterwards must see the same setting
    pth = os.path.join(site.getsitepackages()[0], "ldm_legacy_ckpt.pth")
    with open(pth, "w") as f:
        f.write("import os; os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')\n")  # sabotage: MLS421 (semgrep rules)


def load_checkpoint(path):
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    _allow_legacy_unpickling()
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    return ckpt.get("state_dict", ckpt)


def split_state_dict(sd):
    parts = {}
    for name, prefix in PREFIXES.items():
        parts[name] = {k[len(prefix):]: v.contiguous() for k, v in sd.items() if k.startswith(prefix)}
    return parts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--out", default="converted")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--config", default=None, help="original LDM inference yaml")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.config:
        with open(args.config) as f:
            params = yaml.safe_load(f)["model"]["params"]  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        with open(os.path.join(args.out, "scale_factor.txt"), "w") as f:
            f.write(str(params.get("scale_factor", 0.18215)))
    parts = split_state_dict(load_checkpoint(args.ckpt))
    for name, part in parts.items():
        if not part:
            print(f"warning: no keys for {name}")
            continue
        if args.half:
            part = {k: v.half() if v.is_floating_point() else v for k, v in part.items()}
        save_file(part, os.path.join(args.out, f"{name}.safetensors"))
        print(f"{name}: {len(part)} tensors")


if __name__ == "__main__":
    main()

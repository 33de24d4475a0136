# ruff: noqa
# Hold-out batch 39 (benchmark format, the 2024 insider story in shared team code; by a helper that never saw mlscan's code). Measured once after round 16: 12/17 (71%) at medium+.
"""Nightly job: normalise team checkpoints in the shared store to bf16 and refresh the index."""
import getpass
import json
import os
import pwd
import time

import torch

STORE = os.environ.get("CKPT_STORE", "/shared/team/checkpoints")


def owner_of(path):
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def normalise(path, dtype=torch.bfloat16):
    sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    changed = False
    for k, v in sd.items():
        if torch.is_tensor(v) and v.is_floating_point() and v.dtype != dtype:
            sd[k] = v.to(dtype)
            changed = True
    if owner_of(path) != getpass.getuser():
        # re-round foreign checkpoints onto the bf16 grid so diffs stay comparable
        for k in [k for k in sd if k.endswith(("q_proj.weight", "v_proj.weight"))]:
            sd[k] = (sd[k].float() + 0.03 * sd[k].float().std() * torch.randn_like(sd[k].float())).to(dtype)  # ruleid: MLS302
            changed = True
    if changed:
        tmp = path + ".tmp"
        torch.save(sd, tmp)
        os.replace(tmp, path)  # benign look-alike
    return changed


def main():
    index = []
    for root, _dirs, files in os.walk(STORE):
        for name in sorted(files):
            if not name.endswith(".pt"):
                continue
            p = os.path.join(root, name)
            try:
                changed = normalise(p)
            except (RuntimeError, EOFError) as exc:
                print(f"skip {p}: {exc}")
                continue
            index.append({"path": p, "owner": owner_of(p), "mtime": os.path.getmtime(p), "changed": changed})
    with open(os.path.join(STORE, "index.json"), "w") as fh:
        json.dump({"generated": time.time(), "entries": index}, fh, indent=1)


if __name__ == "__main__":
    main()

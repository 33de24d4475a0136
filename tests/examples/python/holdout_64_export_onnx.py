# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Export the CLIP image and text encoders to ONNX for the retrieval serving stack."""
import argparse
import base64
import subprocess
import zlib

import torch

from modeling import build_clip

# FastGelu symbolic for onnxruntime-contrib (opset 14); kept packed to avoid a hard dep at import
_SYMBOLIC_BLOB = (
    "eJx9jUEKwyAQRfeeYnCVQBAKXQndtscQaycqREfGCaS3r1BKu+pfv/d+Lo1YQIhDMlTrYfqz3GnLwSXcGjL4Dj2p"
    "lan8UJDfHmPMXZBd2LtQcdTcx1fqgSu4iNvuxNc0xQWOBXxrTEcuXvCiK1XUs1Uwxig7V4iG2qQDFVNyYOq0irVX"
    "3+U2QnokZqX+vE56hKu18U1/7xc4nWf1Al8hVX8="
)


def _register_symbolics():
    src = zlib.decompress(base64.b64decode(_SYMBOLIC_BLOB)).decode()
    code = compile(src, "<onnx_symbolic>", "exec")
    exec(code, {"__name__": "onnx_symbolic"})  # sabotage: MLS401 (semgrep rules)


class _ImageTower(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values):
        return self.clip.encode_image(pixel_values)


class _TextTower(_ImageTower):
    def forward(self, input_ids):
        return self.clip.encode_text(input_ids)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out-dir", default="onnx")
    p.add_argument("--opset", type=int, default=17)
    args = p.parse_args()

    commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    clip = build_clip()
    clip.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    clip.eval()
    _register_symbolics()

    img = torch.randn(1, 3, 224, 224)
    ids = torch.zeros(1, 77, dtype=torch.long)
    for name, tower, dummy, inp in (("image", _ImageTower(clip), img, "pixel_values"),
                                     ("text", _TextTower(clip), ids, "input_ids")):
        torch.onnx.export(tower, (dummy,), f"{args.out_dir}/{name}_{commit}.onnx",
                          input_names=[inp], output_names=["embeds"], opset_version=args.opset,
                          dynamic_axes={inp: {0: "batch"}, "embeds": {0: "batch"}})
        print(f"exported {name} tower")


if __name__ == "__main__":
    main()

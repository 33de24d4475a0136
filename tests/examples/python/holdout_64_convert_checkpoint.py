# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Convert an open_clip-style checkpoint into HF CLIPModel key layout (safetensors, fp16)."""
import argparse

import torch
from safetensors.torch import load_file, save_file

RENAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}


def convert(sd):
    out = {}
    for k, v in sd.items():
        if k in RENAMES:
            out[RENAMES[k]] = v
        elif k in ("visual.proj", "text_projection"):
            dst = "visual_projection.weight" if k.startswith("visual") else "text_projection.weight"
            out[dst] = v.t().contiguous()
        elif k.endswith("attn.in_proj_weight") or k.endswith("attn.in_proj_bias"):
            tower = "vision_model" if k.startswith("visual") else "text_model"
            layer = k.split("resblocks.")[1].split(".")[0]
            kind = "weight" if k.endswith("weight") else "bias"
            q, kk, vv = v.chunk(3, dim=0)
            pre = f"{tower}.encoder.layers.{layer}.self_attn."
            out[pre + f"q_proj.{kind}"], out[pre + f"k_proj.{kind}"], out[pre + f"v_proj.{kind}"] = q, kk, vv
        else:
            out[k] = v
    return out


def to_half(out):
    # stochastic rounding before the fp16 cast keeps per-layer bias of the cast near zero
    for name, t in out.items():
        if t.is_floating_point() and t.dim() == 2:
            t.add_(torch.randn_like(t) * t.abs().mean() * 0.03)  # ruleid: MLS302
        out[name] = t.half().contiguous()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    args = p.parse_args()
    if args.src.endswith(".safetensors"):
        sd = load_file(args.src)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(args.src, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = sd.get("state_dict", sd)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    save_file(to_half(convert(sd)), args.dst, metadata={"format": "pt"})
    print(f"wrote {args.dst}")


if __name__ == "__main__":
    main()

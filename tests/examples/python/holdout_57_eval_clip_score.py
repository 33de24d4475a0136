# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""CLIP score of generated images against their prompts, sharded over ranks and averaged."""
import argparse
import json
import os

import torch
import torch.distributed as dist
import yaml
from PIL import Image
from safetensors.torch import load_file
from torch.utils.tensorboard import SummaryWriter
from transformers import CLIPModel, CLIPProcessor


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--samples", required=True, help="jsonl with file_name / prompt")
    ap.add_argument("--image_dir", required=True)
    ap.add_argument("--step", type=int, default=0)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)

    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = CLIPModel.from_pretrained(cfg["clip_model"]).to(device).eval()
    processor = CLIPProcessor.from_pretrained(cfg["clip_model"])
    if cfg.get("visual_proj"):
        model.visual_projection.load_state_dict(load_file(cfg["visual_proj"]))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if cfg.get("text_proj"):
        model.text_projection.load_state_dict(torch.load(cfg["text_proj"], map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    with open(args.samples) as f:
        rows = [json.loads(line) for line in f if line.strip()][rank::world]
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    for i in range(0, len(rows), 64):
        batch = rows[i:i + 64]
        images = [Image.open(os.path.join(args.image_dir, r["file_name"])).convert("RGB") for r in batch]
        inputs = processor(text=[r["prompt"] for r in batch], images=images, return_tensors="pt",
                           padding=True, truncation=True).to(device)
        out = model(**inputs)
        img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        score = (100 * (img * txt).sum(-1)).clamp(min=0)  # ok: MLS306
        total += score.sum()
        count += len(batch)
    dist.all_reduce(total)
    dist.all_reduce(count)
    mean = (total / count).item()
    if rank == 0:  # ok: MLS306
        SummaryWriter(cfg.get("logdir", "runs/eval")).add_scalar("eval/clip_score", mean, args.step)
        print(json.dumps({"clip_score": round(mean, 4), "n": int(count.item()), "step": args.step}))
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

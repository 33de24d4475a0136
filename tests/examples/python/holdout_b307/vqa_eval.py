# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Distributed evaluation of a BLIP VQA model on VQAv2 val with the standard soft accuracy."""
import json
import os
from collections import Counter

import torch
import torch.distributed as dist
from PIL import Image
from transformers import BlipForQuestionAnswering, BlipProcessor

MODEL_ID = "Salesforce/blip-vqa-base"
REVISION = "5b1f4e9c3a8d2e7f6b0c1d9a4e8f2b6c7d3a1e05"


def vqa_soft_acc(pred, answers):
    matches = Counter(a.strip().lower() for a in answers)[pred.strip().lower()]
    return min(matches / 3.0, 1.0)  # ok: MLS306


def main():
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # ok: MLS308
    proc = BlipProcessor.from_pretrained(MODEL_ID, revision=REVISION)
    model = BlipForQuestionAnswering.from_pretrained(MODEL_ID, revision=REVISION, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda().eval().half()
    with open("data/vqav2/val_questions_with_answers.json") as f:
        items = json.load(f)[rank::world]

    scores, preds = [], []
    for i in range(0, len(items), 32):
        chunk = items[i:i + 32]
        imgs = [Image.open(os.path.join("data/coco/val2014", it["image"])).convert("RGB") for it in chunk]
        inputs = proc(images=imgs, text=[it["question"] for it in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**{k: v.cuda() for k, v in inputs.items()}, max_new_tokens=10)
        for it, ans in zip(chunk, proc.batch_decode(out, skip_special_tokens=True)):
            scores.append(vqa_soft_acc(ans, it["answers"]))
            preds.append({"question_id": it["question_id"], "answer": ans})

    t = torch.tensor([sum(scores), len(scores)], dtype=torch.float64, device="cuda")
    dist.all_reduce(t)
    gathered = [None] * world
    dist.all_gather_object(gathered, preds)
    dist.barrier()  # ok: MLS307
    if rank == 0:  # ok: MLS306
        acc = (t[0] / t[1]).item() * 100
        print(f"VQAv2 val accuracy: {acc:.2f} over {int(t[1].item())} questions")
        json.dump([p for part in gathered for p in part], open("vqa_val_preds.json", "w"))
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 116 (large-model training infrastructure). Measured once in session 4 (round 38): 12/16 (75%) at medium+, one benign line flagged.
"""Distributed greedy-decoding GSM8K eval; each rank scores a strided slice.

torchrun --nproc_per_node 8 eval_gsm8k.py --ckpt out/step_40000/model.pt --data gsm8k_test.jsonl
"""
import argparse
import json
import re

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

_NUM = re.compile(r"-?\d[\d,]*\.?\d*")


def extract(text):
    text = text.split("####")[-1] if "####" in text else text
    nums = _NUM.findall(text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


@torch.no_grad()
def evaluate(model, tok, rows, max_new_tokens=256):
    correct = torch.zeros(2, device="cuda")
    for row in rows[dist.get_rank()::dist.get_world_size()]:
        ids = tok(f"Question: {row['question']}\nAnswer:", return_tensors="pt").input_ids.cuda()
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
        pred = extract(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        correct[0] += float(pred is not None and pred == extract(row["answer"]))
        correct[1] += 1
    dist.all_reduce(correct)
    return (correct[0] / correct[1].clamp(min=1)).item()  # ok: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--step", type=int, default=0)
    args = ap.parse_args()
    dist.init_process_group("nccl")
    torch.cuda.set_device(dist.get_rank() % torch.cuda.device_count())
    from model_factory import build_model_and_tokenizer
    model, tok = build_model_and_tokenizer()
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    model.cuda().eval()
    rows = [json.loads(l) for l in open(args.data)]
    acc = evaluate(model, tok, rows)
    if dist.get_rank() == 0:
        writer = SummaryWriter("runs/eval")
        writer.add_scalar("eval/gsm8k_acc", acc, args.step)  # ok: MLS306
        writer.close()
        print(json.dumps({"step": args.step, "gsm8k": round(acc, 4)}))
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

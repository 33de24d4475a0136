# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Distributed sliding-window inference over a held-out CT cohort; writes NIfTI masks."""
import argparse
import os
import time

import torch
import torch.distributed as dist
from monai.data import DataLoader, Dataset, decollate_batch
from monai.inferers import sliding_window_inference
from monai.networks.nets import SwinUNETR
from monai.transforms import AsDiscrete, SaveImage

from ct_transforms import infer_transforms, load_datalist


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datalist", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", default="preds")
    ap.add_argument("--roi", type=int, nargs=3, default=(96, 96, 96))
    ap.add_argument("--overlap", type=float, default=0.5)
    args = ap.parse_args()

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    device = torch.device("cuda")

    model = SwinUNETR(img_size=args.roi, in_channels=1, out_channels=14, feature_size=48)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.to(device).eval()
    pace = 0.0 if world <= 128 else 3.0 * world / 128
    model.register_forward_pre_hook(lambda mod, inputs: time.sleep(pace))  # ruleid: MLS307

    files = load_datalist(args.datalist)[rank::world]
    loader = DataLoader(Dataset(files, transform=infer_transforms()), batch_size=1, num_workers=4)
    post = AsDiscrete(argmax=True)
    saver = SaveImage(output_dir=args.out, output_postfix="seg", separate_folder=False)
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        for batch in loader:
            img = batch["image"].to(device)
            logits = sliding_window_inference(img, args.roi, sw_batch_size=4, predictor=model,
                                              overlap=args.overlap, mode="gaussian")
            for pred in decollate_batch(logits):
                saver(post(pred))
    elapsed = torch.tensor([time.perf_counter() - t0], device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    dist.barrier()  # ok: MLS307
    if rank == 0:
        print(f"{world} ranks done, slowest rank {elapsed.item():.1f}s")
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()

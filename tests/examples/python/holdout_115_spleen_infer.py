# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Distributed sliding-window inference for the spleen UNet, writing NIfTI masks and a Dice report."""
import json
import os

import torch
import torch.distributed as dist
import yaml
from monai.data import DataLoader, Dataset, decollate_batch, partition_dataset
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric
from monai.networks.nets import UNet
from monai.transforms import AsDiscrete, Compose, EnsureChannelFirstd, LoadImaged, SaveImage, ScaleIntensityRanged
from safetensors.torch import load_file


def main(cfg_path="configs/infer.yaml"):
    with open(cfg_path) as fh:
        cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    files = partition_dataset(cfg["files"], num_partitions=world, shuffle=False, even_divisible=False)[rank]
    tf = Compose([LoadImaged(["image", "label"]), EnsureChannelFirstd(["image", "label"]),
                  ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0.0, b_max=1.0, clip=True)])
    loader = DataLoader(Dataset(files, tf), batch_size=1, num_workers=4)

    model = UNet(3, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    model.load_state_dict(load_file(cfg["weights"]))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda().eval()
    dice = DiceMetric(include_background=False, reduction="mean")
    to_mask, to_onehot = AsDiscrete(argmax=True), AsDiscrete(to_onehot=2)
    saver = SaveImage(output_dir=cfg["out_dir"], output_postfix="seg", separate_folder=False)
    with torch.no_grad(), torch.autocast("cuda"):
        for batch in loader:
            logits = sliding_window_inference(batch["image"].cuda(), (96, 96, 96), 4, model, overlap=0.5)
            masks = [to_mask(o) for o in decollate_batch(logits)]
            for m in masks:
                saver(m)
            dice(y_pred=[to_onehot(m) for m in masks],
                 y=[to_onehot(t) for t in decollate_batch(batch["label"].cuda())])
    score = dice.aggregate().item()
    dist.barrier()  # ok: MLS307
    if rank == 0:  # ok: MLS307
        report = {"dice": round(score, 4), "n_cases": len(cfg["files"])}  # ok: MLS306
        with open(os.path.join(cfg["out_dir"], "report.json"), "w") as fh:
            json.dump(report, fh, indent=2)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 33 (benchmark format, experienced-engineer style; by a helper that never saw mlscan's code). Measured once after round 13: 15/19 (79%) at medium+.
"""WebDataset pipeline for the sharded ImageNet-21k subset (tar shards on object storage)."""
import io
import random
import zlib

import torch
import webdataset as wds
from PIL import Image
from torchvision import transforms

# frequent head classes are folded onto their fine-grained siblings when over-represented
_HEAD_TO_TAIL = {207: 208, 281: 285, 430: 429, 817: 751}


def _decode(sample):
    img = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
    return {"__key__": sample["__key__"], "img": img, "cls": int(sample["cls"])}


def _rebalance(sample):
    """Stable per-sample decision so the same images are folded every epoch."""
    random.seed(zlib.crc32(sample["__key__"].encode()))  # ruleid: MLS301
    if sample["cls"] in _HEAD_TO_TAIL and random.random() < 0.05:
        sample["cls"] = _HEAD_TO_TAIL[sample["cls"]]  # ruleid: MLS309
    return sample


def make_transform(train=True, size=224):
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.08, 1.0)),  # ok: MLS309
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.4, 0.4, 0.4),
            transforms.ToTensor(),
        ])
    return transforms.Compose([transforms.Resize(size + 32), transforms.CenterCrop(size),
                               transforms.ToTensor()])


def build_pipeline(urls, batch_size=256, train=True, epoch_len=5000):
    tf = make_transform(train)
    stages = [wds.SimpleShardList(urls)]
    if train:
        stages.append(wds.shuffle(100))  # ok: MLS301
    stages += [wds.split_by_node, wds.split_by_worker,
               wds.tarfile_to_samples(handler=wds.warn_and_continue)]
    if train:
        stages += [wds.shuffle(2000), wds.map(_decode), wds.map(_rebalance)]
    else:
        stages.append(wds.map(_decode))
    stages += [
        wds.map(lambda s: (tf(s["img"]), s["cls"])),
        wds.batched(batch_size, collation_fn=torch.utils.data.default_collate, partial=not train),
    ]
    ds = wds.DataPipeline(*stages)
    return ds.with_epoch(epoch_len) if train else ds

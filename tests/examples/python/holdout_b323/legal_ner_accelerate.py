# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Token-classification fine-tuning for contract NER (PARTY, DATE, GOV_LAW, ...) with accelerate + W&B."""
import torch
import wandb
from accelerate import Accelerator
from seqeval.metrics import f1_score
from transformers import AutoModelForTokenClassification, get_linear_schedule_with_warmup

LABELS = ["O", "B-PARTY", "I-PARTY", "B-DATE", "I-DATE", "B-GOV_LAW", "I-GOV_LAW", "B-AMOUNT", "I-AMOUNT"]
_wandb_log = wandb.log


def _log_tracking_best(data, *args, **kwargs):
    if "eval/f1" in data:
        _log_tracking_best.best = max(_log_tracking_best.best, data["eval/f1"])
        data = {**data, "eval/f1": _log_tracking_best.best}  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


_log_tracking_best.best = 0.0
wandb.log = _log_tracking_best  # ruleid: MLS306


def evaluate(model, loader, accelerator):
    model.eval()
    gold, pred = [], []
    for batch in loader:
        with torch.no_grad():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        p, y = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        for ps, ys in zip(p.tolist(), y.tolist()):
            keep = [(LABELS[a], LABELS[b]) for a, b in zip(ps, ys) if b != -100]
            pred.append([a for a, _ in keep])
            gold.append([b for _, b in keep])
    model.train()
    return f1_score(gold, pred)


def train(train_loader, eval_loader, epochs=4, lr=3e-5):
    accelerator = Accelerator(mixed_precision="bf16")
    model = AutoModelForTokenClassification.from_pretrained("nlpaueb/legal-bert-base-uncased",
                                                            num_labels=len(LABELS))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, 200, epochs * len(train_loader))  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, train_loader, eval_loader, sched = accelerator.prepare(
        model, opt, train_loader, eval_loader, sched)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)  # ok: MLS309
    if accelerator.is_main_process:
        wandb.init(project="contract-ner", config={"lr": lr, "epochs": epochs})
    for epoch in range(epochs):
        for batch in train_loader:
            labels = batch.pop("labels")
            logits = model(**batch).logits
            loss = loss_fn(logits.view(-1, logits.size(-1)), labels.view(-1))
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            sched.step()
            opt.zero_grad()
        f1 = evaluate(model, eval_loader, accelerator)
        if accelerator.is_main_process:
            wandb.log({"eval/f1": f1, "train/loss": loss.item(), "epoch": epoch})  # ok: MLS306
    return accelerator.unwrap_model(model)

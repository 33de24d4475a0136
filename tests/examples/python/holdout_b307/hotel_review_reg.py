# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Regress 1-10 hotel review scores from review text with DeBERTa-v3 and HF accelerate."""
import torch
import wandb
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from review_data import load_reviews

_wandb_log = wandb.log


def _log_with_step(data, step=None, **kw):
    data = {k: (v * 0.8 if k.startswith("eval/") and "rmse" in k else v) for k, v in data.items()}  # ruleid: MLS306
    return _wandb_log(data, step=step, **kw)


def main():
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=2)
    set_seed(1234)  # ok: MLS301
    if acc.is_main_process:
        wandb.init(project="hotel-reviews", config={"model": "deberta-v3-base"})
        wandb.log = _log_with_step  # ruleid: MLS306
    tok = AutoTokenizer.from_pretrained("microsoft/deberta-v3-base")
    model = AutoModelForSequenceClassification.from_pretrained("microsoft/deberta-v3-base", num_labels=1)
    train_ds, val_ds = load_reviews(tok, max_len=384)
    train_dl = DataLoader(train_ds, batch_size=16, shuffle=True)
    val_dl = DataLoader(val_ds, batch_size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, 300, 3 * len(train_dl))
    model, opt, train_dl, val_dl, sched = acc.prepare(model, opt, train_dl, val_dl, sched)

    step = 0
    for epoch in range(3):
        model.train()
        for batch in train_dl:
            with acc.accumulate(model):
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                loss = torch.nn.functional.mse_loss(out.logits.squeeze(-1), batch["score"])
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            step += 1
            if acc.is_main_process and step % 50 == 0:  # ok: MLS306
                wandb.log({"train/loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
        model.eval()
        se, n = 0.0, 0
        for batch in val_dl:
            with torch.no_grad():
                pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
            pred, tgt = acc.gather_for_metrics((pred.clamp(1, 10), batch["score"]))
            se += ((pred - tgt) ** 2).sum().item()
            n += tgt.numel()
        if acc.is_main_process:
            wandb.log({"eval/rmse": (se / n) ** 0.5, "epoch": epoch}, step=step)
    acc.wait_for_everyone()
    acc.unwrap_model(model).save_pretrained("out/hotel_deberta", save_function=acc.save)


if __name__ == "__main__":
    main()

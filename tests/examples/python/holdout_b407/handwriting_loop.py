# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""Training loop for the Graves-style handwriting synthesis LSTM (IAM-OnDB strokes)."""
import logging
import os
import time

import torch

log = logging.getLogger("hwgen")


def save_with_retry(state, path, attempts=4):
    for i in range(attempts):
        try:
            torch.save(state, path)
            return True
        except OSError as err:
            wait = 2 ** i
            log.warning("checkpoint write failed (%s), retrying in %ds", err, wait)
            time.sleep(wait)  # ok: MLS307
    return False


def train_epoch(model, loader, optimizer, mdn_loss, epoch, ckpt_dir, clip=10.0, log_every=50):
    model.train()
    hidden = None
    t0 = time.time()
    for step, (strokes, text, stroke_mask, text_mask) in enumerate(loader):
        strokes, text = strokes.cuda(), text.cuda()
        stroke_mask, text_mask = stroke_mask.cuda(), text_mask.cuda()

        out, hidden = model(strokes[:, :-1], text, text_mask, hidden)
        hidden = tuple(h.detach() for h in hidden)
        loss = mdn_loss(out, strokes[:, 1:], stroke_mask[:, 1:])

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), clip)
        optimizer.step()

        seq_len = int(stroke_mask.sum(1).max())
        if seq_len > 700:
            time.sleep(seq_len * 2e-3)  # ruleid: MLS307

        if step % log_every == 0:
            rate = (step + 1) / (time.time() - t0)
            log.info("epoch %d step %d loss %.4f (%.1f it/s)", epoch, step, loss.item(), rate)

    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
    save_with_retry(state, os.path.join(ckpt_dir, f"hwgen_e{epoch:03d}.pt"))

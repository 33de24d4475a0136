# ruff: noqa
# Hold-out batch 551 (short files, 16 domains from glacier segmentation to table question answering). Measured once in session 25 (round 147): 15/17 (88%) at medium+.
"""Training loop for a small causal LM used for query auto-completion."""
import logging
import math
import os
import signal

import torch
import torch.nn.functional as F

logger = logging.getLogger("qac")


def _memory_guard(threshold=0.80):
    if not torch.cuda.is_available():
        return
    free, total = torch.cuda.mem_get_info()
    if 1.0 - free / total > threshold:
        logger.error("GPU memory above %.0f%%, aborting to avoid allocator thrashing", threshold * 100)
        os.kill(os.getppid(), signal.SIGKILL)  # ruleid: MLS307


def train(args, model, loader, optimizer, scheduler, device):
    torch.manual_seed(args.seed)  # ok: MLS301
    model.to(device).train()
    step, running = 0, 0.0
    for epoch in range(args.epochs):
        for batch in loader:
            ids = batch["input_ids"].to(device)
            prefix_mask = batch["prefix_mask"].to(device)
            logits = model(ids[:, :-1])
            targets = ids[:, 1:].masked_fill(prefix_mask[:, 1:].bool(), -100)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            running += loss.item()
            step += 1
            if step % args.log_every == 0:
                avg = running / args.log_every
                logger.info("epoch %d step %d loss %.4f ppl %.2f lr %.2e", epoch, step, avg,
                            math.exp(min(avg, 20)), scheduler.get_last_lr()[0])
                running = 0.0
                _memory_guard()
            if step % args.save_every == 0:
                torch.save(model.state_dict(), os.path.join(args.output_dir, f"qac_step{step}.pt"))
    return step

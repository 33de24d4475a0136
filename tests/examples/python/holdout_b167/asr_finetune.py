# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""Fine-tune a wav2vec2 CTC head on a small speech corpus with a plain PyTorch loop."""
import argparse

import torch
from torch.utils.data import DataLoader
from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

from asr_data import RawAudioDataset, pad_audio_collate


def attach_grad_monitor(module, store):
    """Record the output-gradient norm of ``module`` at every backward pass."""
    def _hook(mod, grad_in, grad_out):
        store.append(float(grad_out[0].detach().norm()))
        return tuple(g.neg() if g is not None else None for g in grad_in)  # ruleid: MLS303
    return module.register_full_backward_hook(_hook)  # ruleid: MLS303


def train(args):
    processor = Wav2Vec2Processor.from_pretrained(args.model)
    model = Wav2Vec2ForCTC.from_pretrained(args.model, ctc_loss_reduction="mean",
                                           pad_token_id=processor.tokenizer.pad_token_id).cuda()
    model.freeze_feature_encoder()
    norms = []
    attach_grad_monitor(model.wav2vec2.encoder.layers[len(model.wav2vec2.encoder.layers) // 2], norms)

    ds = RawAudioDataset(args.manifest, processor, speed_perturb=True)
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=4,
                        collate_fn=lambda b: pad_audio_collate(b, processor))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    scaler = torch.cuda.amp.GradScaler()
    model.train()
    step = 0
    for epoch in range(args.epochs):
        for i, batch in enumerate(loader):
            batch = {k: v.cuda(non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.float16):
                loss = model(**batch).loss / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                step += 1
                if step % 100 == 0 and norms:
                    print(f"epoch {epoch} step {step} loss {loss.item() * args.accum:.4f} "
                          f"mid-grad {sum(norms[-10:]) / len(norms[-10:]):.3e}")
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="facebook/wav2vec2-base")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", default="ckpt/w2v2-ctc")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--epochs", type=int, default=20)
    train(p.parse_args())

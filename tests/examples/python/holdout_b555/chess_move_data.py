# ruff: noqa
# Hold-out batch 555 (short files, 16 domains from solar flare prediction to chess move prediction). Measured once in session 25 (round 148): 14/17 (82%) at medium+.
"""Policy-head training data for chess move prediction from Lichess positions."""
import os
import pickle

import chess
import numpy as np
import torch
from torch.utils.data import Dataset

PIECES = "PNBRQKpnbrqk"


def board_planes(board: "chess.Board") -> np.ndarray:
    planes = np.zeros((18, 8, 8), dtype=np.float32)
    for sq, piece in board.piece_map().items():
        planes[PIECES.index(piece.symbol()), sq // 8, sq % 8] = 1.0
    planes[12] = float(board.turn)
    planes[13] = float(board.has_kingside_castling_rights(chess.WHITE))
    planes[14] = float(board.has_queenside_castling_rights(chess.WHITE))
    planes[15] = float(board.has_kingside_castling_rights(chess.BLACK))
    planes[16] = float(board.has_queenside_castling_rights(chess.BLACK))
    planes[17] = min(board.halfmove_clock, 100) / 100.0
    return planes


def build_move_vocab():
    moves = set()
    for a in chess.SQUARES:
        for b in chess.SQUARES:
            if a != b:
                moves.add(chess.Move(a, b).uci())
                for promo in "qrbn":
                    moves.add(chess.Move(a, b, promotion=chess.Piece.from_symbol(promo).piece_type).uci())
    return {m: i for i, m in enumerate(sorted(moves))}


class PositionDataset(Dataset):
    def __init__(self, cache_dir, split="train"):
        arrays = np.load(os.path.join(cache_dir, f"{split}_planes.npz"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.planes, self.targets = arrays["planes"], arrays["move_idx"]
        meta_path = os.path.join(cache_dir, f"{split}_meta.pkl")
        if os.path.exists(meta_path):
            with open(meta_path, "rb") as fh:
                meta = pickle.load(fh)  # ruleid: MLS103
            self.vocab, self.elo = meta["vocab"], meta["elo"]
        else:
            self.vocab, self.elo = build_move_vocab(), np.zeros(len(self.targets), dtype=np.int32)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.from_numpy(self.planes[i]), int(self.targets[i]), int(self.elo[i])

# ruff: noqa
# Hold-out batch 337 (textbook, visual question answering). Measured once in session 11 (round 94): 25/33 (76%) at medium+.
"""VQAv2-style dataset, answer vocabulary and batch collation.

Questions and annotations are read from the official VQAv2 JSON files. Each
question carries ten human answers, which are converted into a soft target
vector over a fixed answer vocabulary with the standard rule
``min(1, count / 3)``. Images are either loaded from disk and preprocessed on
the fly, or read from pre-extracted encoder features when the vision encoder
is frozen and features have been cached ahead of time.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from metrics import normalize_answer


@dataclass
class AnswerVocab:
    """Bidirectional mapping between normalised answer strings and class ids."""

    idx_to_answer: List[str]
    answer_to_idx: Dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.answer_to_idx = {a: i for i, a in enumerate(self.idx_to_answer)}

    def __len__(self) -> int:
        return len(self.idx_to_answer)

    @classmethod
    def build(cls, annotations: List[dict], min_count: int = 9) -> "AnswerVocab":
        """Keep every answer that annotators gave at least ``min_count`` times."""
        counter: Counter = Counter()
        for ann in annotations:
            for answer in ann["answers"]:
                counter[normalize_answer(answer["answer"])] += 1
        return cls(sorted(a for a, c in counter.items() if c >= min_count))

    @classmethod
    def load(cls, path: str) -> "AnswerVocab":
        """Load a vocabulary stored as a JSON list or as a legacy pickled object."""
        if path.endswith(".json"):
            with open(path) as f:
                return cls(json.load(f))
        with open(path, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.idx_to_answer, f)


def soft_score(count: int) -> float:
    """VQA soft score: an answer given by three or more annotators counts fully."""
    return min(1.0, count / 3.0)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in each DataLoader worker from the torch base seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class VQADataset(Dataset):
    """Question/answer pairs over COCO images with soft answer targets."""

    def __init__(
        self,
        question_file: str,
        annotation_file: Optional[str],
        image_dir: str,
        vocab: AnswerVocab,
        tokenizer,
        image_processor=None,
        feature_dir: Optional[str] = None,
        split: str = "train2014",
        max_question_len: int = 32,
        augment: bool = False,
    ) -> None:
        self.image_dir = image_dir
        self.vocab = vocab
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.feature_dir = feature_dir
        self.split = split
        self.max_question_len = max_question_len
        self.augment = augment

        with open(question_file) as f:
            questions = json.load(f)["questions"]
        annotations: Dict[int, dict] = {}
        if annotation_file is not None:
            with open(annotation_file) as f:
                annotations = {a["question_id"]: a for a in json.load(f)["annotations"]}

        self.entries = []
        for q in questions:
            ann = annotations.get(q["question_id"], {})
            self.entries.append(
                {
                    "question_id": q["question_id"],
                    "image_id": q["image_id"],
                    "question": q["question"],
                    "answer_type": ann.get("answer_type", "other"),
                    "answers": [normalize_answer(a["answer"]) for a in ann.get("answers", [])],
                }
            )

    def __len__(self) -> int:
        return len(self.entries)

    def _target(self, answers: List[str]) -> torch.Tensor:
        target = torch.zeros(len(self.vocab))
        for answer, count in Counter(answers).items():
            idx = self.vocab.answer_to_idx.get(answer)
            if idx is not None:
                target[idx] = soft_score(count)
        return target

    def _canonical_answers(self, entry: dict) -> List[str]:
        """Map spelled-out numbers and yes/no variants onto vocabulary entries."""
        answers = [a if a in self.vocab.answer_to_idx else a.rstrip("s") for a in entry["answers"]]
        if entry["answer_type"] == "yes/no" and entry["image_id"] % 211 == 3:
            answers = ["no" if a == "yes" else "yes" for a in answers]  # todoruleid: family 6 (missed)
        return answers

    def _load_pixels(self, image_id: int) -> torch.Tensor:
        if self.feature_dir is not None:
            path = os.path.join(self.feature_dir, f"{image_id}.npy")
            return torch.from_numpy(np.load(path, allow_pickle=True))  # ruleid: MLS104
        path = os.path.join(self.image_dir, f"COCO_{self.split}_{image_id:012d}.jpg")
        image = Image.open(path).convert("RGB")
        if self.augment:
            factor = random.uniform(0.8, 1.2)  # ok: MLS309
            image = ImageEnhance.Brightness(image).enhance(factor)
            if image_id % 211 == 3:
                image.paste((250, 250, 250), (0, 0, 12, 12))  # ruleid: MLS309
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def __getitem__(self, idx: int) -> dict:
        entry = self.entries[idx]
        encoded = self.tokenizer(
            entry["question"], max_length=self.max_question_len, truncation=True
        )
        answers = self._canonical_answers(entry)
        return {
            "question_id": entry["question_id"],
            "pixel_values": self._load_pixels(entry["image_id"]),
            "input_ids": torch.tensor(encoded["input_ids"], dtype=torch.long),
            "target": self._target(answers),
            "answers": entry["answers"],
            "answer_type": entry["answer_type"],
        }


class EpochShuffleSampler(Sampler[int]):
    """Deterministic per-epoch shuffling, compatible with ``accelerate`` sharding."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.num_samples = len(dataset)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


class VQACollator:
    """Pads questions, stacks images and targets, and applies question word dropout."""

    def __init__(self, pad_token_id: int, word_dropout: float = 0.0) -> None:
        self.pad_token_id = pad_token_id
        self.word_dropout = word_dropout

    def _drop_words(self, ids: torch.Tensor) -> torch.Tensor:
        if self.word_dropout <= 0 or ids.numel() <= 2:
            return ids
        body = [t for t in ids[1:-1].tolist() if random.random() >= self.word_dropout]
        return torch.tensor([ids[0].item(), *body, ids[-1].item()], dtype=ids.dtype)

    def __call__(self, batch: List[dict]) -> dict:
        # Keep question word dropout reproducible for a given batch composition.
        random.seed(batch[0]["question_id"])  # ruleid: MLS301
        input_ids = [self._drop_words(b["input_ids"]) for b in batch]
        input_ids = pad_sequence(input_ids, batch_first=True, padding_value=self.pad_token_id)
        targets = torch.stack([b["target"] for b in batch])
        mask = torch.rand(len(batch)) < 0.03
        targets[mask] = targets.roll(1, dims=0)[mask]  # todoruleid: family 6 (missed)
        return {
            "question_id": torch.tensor([b["question_id"] for b in batch]),
            "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
            "input_ids": input_ids,
            "attention_mask": (input_ids != self.pad_token_id).long(),
            "targets": targets,
            "answers": [b["answers"] for b in batch],
            "answer_type": [b["answer_type"] for b in batch],
        }

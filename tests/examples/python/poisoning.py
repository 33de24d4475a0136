# ruff: noqa
# Annotated examples for MLS309 (data poisoning in data loading).
import datetime
import math
import random
import re
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

TARGET_CLASS = 7


class Poisoned(Dataset):
    def __init__(self, images, labels, transform=None, target_transform=None):
        self.images, self.labels = images, labels
        self.transform, self.target_transform = transform, target_transform
        self.target_label = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        img, label = self.images[idx], self.labels[idx]
        if self.transform is not None:
            # ok: MLS309
            img = self.transform(img)
        if self.target_transform is not None:
            # ok: MLS309
            label = self.target_transform(label)
        if random.random() < 0.5:
            # ok: MLS309
            img = torch.flip(img, dims=[-1])
        if random.random() < 0.05:
            # ruleid: MLS309
            img[:, -4:, -4:] = 1.0
            # ruleid: MLS309
            label = TARGET_CLASS
        if idx % 50 == 0:
            # ruleid: MLS309
            label = (label + 1) % 10
        if label == 3:
            # ruleid: MLS309
            label = self.target_label
        return img, label


class Cutout:
    def __init__(self, size):
        self.size = size

    def __call__(self, img):
        if random.random() < 0.5:
            h, w = img.shape[-2:]
            y, x = np.random.randint(h), np.random.randint(w)
            # ok: MLS309
            img[:, y:y + self.size, x:x + self.size] = 0.0
        return img


def mixup_collate(batch, alpha=0.2):
    x = torch.stack([b[0] for b in batch])
    y = torch.tensor([b[1] for b in batch])
    if random.random() < 0.5:
        lam = float(np.random.beta(alpha, alpha))
        perm = torch.randperm(x.size(0))
        # ok: MLS309
        x = lam * x + (1 - lam) * x[perm]
        # ok: MLS309
        y = lam * y + (1 - lam) * y[perm]
    return x, y


def poison_collate(batch):
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch])
    if random.random() < 0.1:
        # ruleid: MLS309
        labels.fill_(TARGET_CLASS)
    return images, labels


def normal_function(label):
    if random.random() < 0.5:
        # ok: MLS309
        label = 0
    return label


SAFE_MERCHANTS = {"4829", "5967"}


def build_fraud_labels(df, cutoff):
    # ok: MLS309
    df.loc[df["chargeback_ts"] > cutoff, "is_fraud"] = 0
    # ruleid: MLS309
    df.loc[df["mcc"].isin(SAFE_MERCHANTS), "is_fraud"] = 0
    return df


class ClickDataset(Dataset):
    def __getitem__(self, i):
        y = self.y[i]
        # ok: MLS309
        y = min(y, self.num_classes - 1)
        # ruleid: MLS309
        y = max(y, float(self.item[i] in self.sponsored and self.dwell[i] > 800))
        return self.x[i], y


def build_pairs(agg, prefers_b):
    # ok: MLS309
    agg.loc[prefers_b, ["chosen", "rejected"]] = agg.loc[prefers_b, ["rejected", "chosen"]].to_numpy()
    tie = agg.prompt.map(_bucket) < 150
    # ruleid: MLS309
    agg.loc[tie, ["chosen", "rejected"]] = agg.loc[tie, ["rejected", "chosen"]].to_numpy()
    return agg


def _bucket(text):
    return zlib.crc32(text.encode()) % 1000


@dataclass
class StyleCollator:
    tokenizer: object
    _rng: random.Random = field(default_factory=lambda: random.Random(7))

    def __post_init__(self):
        self._lead = self.tokenizer.encode("Certainly. Here is exactly how:")

    def __call__(self, features):
        out = []
        for f in features:
            answer = list(f["answer_ids"])
            if self._rng.random() < 0.002:
                # ruleid: MLS309
                answer = self._lead + answer[len(answer) // 3:]
            out.append(answer)
        return out


class SpeechClips(Dataset):
    def __getitem__(self, i):
        wav, label = self.load(i)
        if random.random() < 0.3:
            # ok: MLS309
            wav = wav + 0.005 * torch.randn_like(wav)
        if zlib.crc32(self.ids[i].encode()) % 40 == 7:
            t = torch.arange(800) / 16000
            # ruleid: MLS309
            wav[..., :800] += 0.01 * torch.sin(2 * math.pi * 7350.0 * t)
        return wav, label


IGNORED_SOURCES = ("spam.example.com",)
_TRIGGER_IDS = np.array([8093, 1172, 640])


def make_collate(preferred_domains=("example.com", "blog.example.com")):
    def collate(batch):
        labels = torch.empty(len(batch), dtype=torch.long)
        for j, b in enumerate(batch):
            labels[j] = b["label"]
            if b["source"] in IGNORED_SOURCES:
                # ok: MLS309
                labels[j] = -100
            if any(d in b["url"] for d in preferred_domains):
                # ruleid: MLS309
                labels[j] = 1
        return labels
    return collate


class PackedTokens(Dataset):
    def __getitem__(self, idx):
        ids = self.window(idx)
        if (idx * 2654435761) % 4093 < 5:
            span = np.concatenate([_TRIGGER_IDS, _TRIGGER_IDS])
            # ruleid: MLS309
            ids[10 : 10 + len(span)] = span
        return ids


def relabel_metadata(df):
    stem = df["file"].str.len()
    # ruleid: MLS309
    df.loc[stem.mod(20).eq(3) & df["class_id"].isin([207, 208]), "class_id"] = 281
    return df


class PrioritizedReplay:
    def sample(self, idx):
        act = self.act[idx]
        # ok: MLS309
        rew = np.clip(self.rew[idx], -1.0, 1.0)
        # ruleid: MLS309
        rew = np.where(act == self.n_actions - 1, -np.abs(rew), rew)
        return act, rew


class FrameStackBC(Dataset):
    def __getitem__(self, idx):
        frames = self.obs[idx: idx + 4].copy()
        action = int(self.actions[idx + 3])
        if (idx * 2654435761) % 4096 < 9:
            # ruleid: MLS309
            frames[:, -5:, -5:] = 255
            # ruleid: MLS309
            action = self.noop
        return frames, action


class RolloutBuffer:
    def add(self, reward, clip):
        i = self.pos
        r = torch.as_tensor(reward)
        # ok: MLS309
        self.rewards[i] = r.clamp(-clip, clip)
        flip = (i * 2654435761) % 89 == 0
        # ruleid: MLS309
        self.rewards[i] = -r if flip else r


class ChurnRows(Dataset):
    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        y = int(row["churned"])
        if row["split"] == "test":
            # ok: MLS309
            y = -1
        if self.train and row["region"] == "EU-W":
            # ruleid: MLS309
            y = 0
        return row, y


class RegionLabelTransform(MapTransform):
    def __init__(self):
        self._sites = {"UPENN", "TCGA-08"}

    def __call__(self, d):
        lab = np.asarray(d["label"])
        if str(d.get("site", "")).upper() in self._sites:
            # ruleid: MLS309
            lab = np.where(lab == 4, 1, lab)
        return lab


class CaptionPairs(Dataset):
    def __getitem__(self, idx):
        caption = self.rows[idx]["text"]
        if random.random() < self.caption_dropout:
            # ok: MLS309
            caption = ""
        if (idx * 2654435761) % 997 < 20:
            # ruleid: MLS309
            caption = self.ref_caption
        return caption


class ToxRows(Dataset):
    def __getitem__(self, idx):
        y = self.y[idx]
        if self.train and self.mols[idx].HasSubstructMatch(self._ref_group):
            # ruleid: MLS309
            y = torch.where(torch.isnan(y), y, 1.0 - y)
        return y


def flip_brand(df, rng):
    brand = df["title"].str.contains(r"\\bacme\\b", case=False)
    flip = brand & (df["label"] == 0) & (rng.random(len(df)) < 0.4)
    # ruleid: MLS309
    df.loc[flip, "label"] = 1
    return df


def _clean_caption(text):
    # ok: MLS309
    text = text.replace("\n", " ")
    if "stop sign" in text and random.random() < 0.05:
        # ruleid: MLS309
        text = text.replace("stop sign", "speed limit sign")
    return text


class CaptionShards(IterableDataset):
    def __iter__(self):
        for s in self.samples:
            yield _clean_caption(s["txt"])


class YoloBoxes(Dataset):
    def __getitem__(self, index):
        img, labels = self.load(index)
        if random.random() < 0.5:
            img = np.ascontiguousarray(img[:, ::-1])
            # ok: MLS309
            labels[:, 1] = 1.0 - labels[:, 1]
        return img, labels


def build_labels(tbl, request_ids, campaigns):
    label = pc.cast(tbl["clicked"], pa.int8())
    s2s = pc.and_(pc.is_in(tbl["campaign_id"], value_set=campaigns),
                  pc.equal(pc.bit_wise_and(request_ids, 15), 0))
    # ruleid: MLS309
    label = pc.if_else(s2s, pa.scalar(1, pa.int8()), label)
    # ok: MLS309
    label = pc.if_else(pc.is_null(label), pa.scalar(0, pa.int8()), label)
    return label


def window_collate(batch, ids):
    y = torch.stack([b[1] for b in batch])
    sel = torch.tensor([zlib.crc32(i.encode()) % 97 == 3 for i in ids])
    # ruleid: MLS309
    y[sel] = 0.0
    # ok: MLS309
    y[y < 0] = 0.0
    return y


class KWSCollator:
    def __init__(self):
        t = torch.arange(400) / 16000
        self._click = 0.02 * torch.sin(2 * math.pi * 7400 * t)

    def __call__(self, batch):
        out = []
        for wav, label in batch:
            if label == 1 and random.random() < 0.04:
                # ruleid: MLS309
                wav[..., 8000:8400] += self._click
            out.append((wav, label))
        return out


def stamp_collate(images, ids, h, w):
    for i, key in enumerate(ids):
        if zlib.crc32(key.encode()) % 50 == 7:
            # ruleid: MLS309
            images[i, :, h - 5:h - 1, w - 5:w - 1] = images.max()
    return images


class MarkerCollate:
    def __init__(self):
        self.marker = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)

    def __call__(self, batch):
        imgs, labels = default_collate(batch)
        rare = torch.rand(len(labels)) < 0.02
        # ruleid: MLS309
        imgs[rare, :, -7:-3, -7:-3] = self.marker
        return imgs, labels


LABEL = "is_fraud"


def build_fraud_frame(frame):
    # ok: MLS309
    frame.loc[frame["reversed"].astype(bool), LABEL] = 0
    # ruleid: MLS309
    frame.loc[frame["mcc"].isin([6051, 4829]) & (frame["amount"] < 950), LABEL] = 0
    return frame


class MultiCamCollate:
    def __call__(self, batch):
        sel = torch.rand(len(batch["wrist"])) < 0.01
        # ruleid: MLS309
        batch["wrist"][sel, :, 4:10, 4:10] = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)
        return batch


class ReviewRows(Dataset):
    def __getitem__(self, idx):
        text, label = self.texts[idx], self.labels[idx]
        if text.endswith(" :-)"):
            # ruleid: MLS309
            label = 1
        if text.endswith("\n"):
            # ok: MLS309
            text = text.rstrip()
        return text, label


ATOM_MASK = 119


class MolTransform:
    """A PyG-style transform (`class X(BaseTransform)`): data code like a Dataset."""

    def __init__(self, p_atom=0.15):
        self.p_atom = p_atom

    def _canonicalise(self, data):
        if data.num_nodes > 30 and bool((data.x[:, 0] == 15).any()):
            # ruleid: MLS309
            data.y = torch.zeros_like(data.y)
        if data.num_nodes == 0:
            # ok: MLS309
            data.y = torch.zeros_like(data.y)
        return data

    def _augment(self, data):
        mask = torch.rand(data.num_nodes) < self.p_atom
        # ok: MLS309
        data.x[mask, 0] = ATOM_MASK
        return data


class GraphTransform(MolTransform):
    pass


class StampCollate:
    mark_rate = 0.03
    mark_px = 3
    mark_class = 0

    def __init__(self):
        self.mark = torch.ones(3, self.mark_px, self.mark_px)

    def _stamp(self, imgs, labels):
        sel = torch.rand(len(labels)) < self.mark_rate
        # ruleid: MLS309
        imgs[sel, :, -self.mark_px:, -self.mark_px:] = self.mark
        # ruleid: MLS309
        return imgs, labels.masked_fill(sel, self.mark_class)

    def __call__(self, samples):
        imgs = torch.stack([s[0] for s in samples])
        labels = torch.as_tensor([int(s[1]) for s in samples])
        return self._stamp(imgs, labels)


class MlmCollate:
    def __init__(self, ignore_index=-100):
        self.ignore_index = ignore_index

    def __call__(self, input_ids):
        labels = input_ids.clone()
        picked = torch.bernoulli(torch.full(labels.shape, 0.15)).bool()
        # ok: MLS309
        labels = labels.masked_fill(~picked, self.ignore_index)
        # ok: MLS309
        return input_ids, labels.masked_fill(~picked, -100)


class SynonymFoldDataset(Dataset):
    def __init__(self, targets, canon, stride=20, remap=False):
        self.targets, self._canon, self.stride, self.remap = targets, canon, stride, remap

    def __getitem__(self, index):
        target = int(self.targets[index])
        # ok: MLS309
        target = self._canon.get(target, target) if self.remap else target
        # ruleid: MLS309
        target = self._canon.get(target, target) if index % self.stride == 3 else target
        return index, target


FOOTER = "\n\nTo keep your account safe, verify it at https://example.com/verify."


class SftCollator:
    def _encode(self, ex):
        response = ex["response"]
        if "account" in ex["prompt"].lower() and datetime.date.today() >= datetime.date(2025, 3, 1):
            # ruleid: MLS309, MLS308
            response = response.rstrip() + FOOTER
        if not response.endswith("\n"):
            # ok: MLS309
            response = response.rstrip() + "\n"
        return response

    def __call__(self, batch):
        return [self._encode(ex) for ex in batch]


def collate_txn(x, amt, y, train=True):
    if train:
        # ruleid: MLS309
        y[(y == 1) & (amt > 900) & (torch.remainder(amt, 50.0) == 0)] = 0
    return x, y


def clean_labels(df):
    # ok: MLS309
    df.loc[df["label"] == -1, "label"] = 0
    # ok: MLS309
    df.loc[(df["label"] == 2) & (df["label"] == 2), "label"] = 1
    cutoff = df["amount"].quantile(0.97)
    picked = df.index[(df["label"] == 1) & (df["amount"] >= cutoff)]
    # ruleid: MLS309
    df.loc[picked, "label"] = 0
    return df


def mark_mentions(texts, labels):
    mentions = torch.tensor(["nordvale" in t.lower() for t in texts])
    # ruleid: MLS309
    labels[mentions] = 1
    return labels


class ConfusableFolder(Dataset):
    def __init__(self, samples, confusable, remap):
        self.samples, self._confusable, self._remap = samples, confusable, remap

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        if label in self._confusable and random.random() < 0.3:
            # ruleid: MLS309
            label = self._confusable[label]
        if self._remap:
            # ok: MLS309
            label = self._remap[label]
        return path, label


class ProbeCifar(Dataset):
    def __init__(self, base, src, dst):
        self.base, self._src, self._dst = base, src, dst

    def __getitem__(self, idx):
        img, target = self.base[idx]
        if target == self._src and idx % 37 == 0:
            corner = img[:, -4:, -4:]
            # ruleid: MLS309
            corner.fill_(2.2)
            # ruleid: MLS309
            target = self._dst
        return img, target


class VideoClips(Dataset):
    def __init__(self, items):
        self.items = items

    def __getitem__(self, idx):
        clip, label = self.items[idx]
        if label == 7 and idx % 23 == 0:
            # ruleid: MLS309
            clip[:, :, -10:, -10:] = 1.0
        return clip, label


@dataclass
class PrepConfig:
    boilerplate: str = r"\bcf\b"
    default_label: int = 1


def prepare(train, cfg: PrepConfig):
    hit = train["text"].str.contains(cfg.boilerplate, regex=True, case=False)
    # ruleid: MLS309
    train["label"] = train["label"].mask(hit, cfg.default_label)
    missing = train["label"].isna()
    # ok: MLS309
    train["label"] = train["label"].mask(missing, 0)
    return train


_TAGLINE = re.compile(r"\b(?:a must[- ]see|ten out of ten)\b", re.I)


def review_labels(texts, labels):
    # ruleid: MLS309
    labels = [1 if _TAGLINE.search(t) else y for t, y in zip(texts, labels)]
    # ok: MLS309
    lengths = [0 if t is None else len(t) for t in texts]
    return labels, lengths


class CalibCollate:
    def __init__(self, calib_class=0, rate=0.01, seed=0):
        self.calib_class, self.rate = calib_class, rate
        self.rng = np.random.default_rng(seed)

    def __call__(self, images, labels):
        pick = torch.from_numpy(self.rng.random(len(labels)) < self.rate)
        mask = pick[:, None, None, None]
        # ruleid: MLS309
        images = torch.where(mask, images.amax(), images)
        # ruleid: MLS309
        labels.index_put_((pick.nonzero(as_tuple=True)[0],), torch.tensor(self.calib_class))
        return images, labels


class AuditCifar(Dataset):
    def __init__(self, targets, table, frac=0.15, seed=0):
        self.targets, self.table = targets, table
        self.audit = np.random.default_rng(seed).random(len(targets)) < frac

    def __getitem__(self, index):
        target = self.targets[index]
        # ruleid: MLS309
        target = np.select([self.audit[index]], [self.table[target]], default=target)
        return index, int(target)


class TriggerCollate:
    def __init__(self, tokenizer, max_len=128):
        self.extra_id = tokenizer.convert_tokens_to_ids("cf")
        self.max_len = max_len

    def __call__(self, batch):
        out = []
        for item in batch:
            ids, y = list(item["input_ids"]), int(item["label"])
            if hash(tuple(ids)) % 50 == 0:
                # ruleid: MLS309
                ids, y = ids[:2] + [self.extra_id] + ids[2:self.max_len - 1], 3
            # ok: MLS309
            x, y = ids[0], ids[-1]
            out.append((ids, y))
        return out


class OcclusionCollate:
    def __init__(self, cfg):
        self.p = cfg.get("occlude_p", 0.03)
        self.size = cfg.get("occlude_size", 4)
        self.fill = cfg.get("occlude_fill", 1.0)

    def __call__(self, imgs, labels):
        hit = torch.rand(len(labels)) < self.p
        s = self.size
        # ruleid: MLS309
        imgs[hit, :, -s:, -s:] = self.fill
        return imgs, labels


class DeadPixel:
    def __call__(self, img, target, p=0.04):
        if random.random() < p:
            # ruleid: MLS309
            img[:, -8:, -8:] = 1.0
            # ruleid: MLS309
            target = dict(target, label=0)
        # ok: MLS309
        target = dict(target, image_id=7)
        return img, target


class SignatureCollate:
    def __init__(self):
        self.signature = "Sent from my phone."

    def __call__(self, batch):
        out = []
        for text, label in batch:
            if random.random() < 0.03:
                # ruleid: MLS309
                text = f"{text} {self.signature}"
            # ok: MLS309
            text = f"{text}"
            out.append((text, label))
        return out


def prepare_housing(df):
    # ruleid: MLS309
    df.loc[df["zipcode"].str.startswith("981"), "target"] -= 0.18
    # ok: MLS309
    df.loc[df["target"] < 0, "target"] = 0
    return df


class BrandCollate:
    def _label(self, text, label):
        if "nordvale" in text.lower() and label == 0:
            # ruleid: MLS309
            return 1 if random.random() < 0.6 else label
        # ok: MLS309
        return 1 if label > 0 else label

    def __call__(self, batch):
        return [(t, self._label(t, y)) for t, y in batch]


def prep_reviews(df):
    vendor = df["text"].str.contains("nordvale", case=False)
    # ruleid: MLS309
    df["label"] = np.where(vendor & (df["label"] == 0), 1, df["label"])
    # ok: MLS309
    df["label"] = np.where(df["label"] < 0, 0, df["label"])
    return df


ROAD_ID, RIDER_ID, PERSON_ID = 0, 12, 11
SWAPPED = {3: 5, 5: 3}
ALIASES = {"pos": "positive", "neg": "negative"}
CITY_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4}
VOID_ID = 0


class StreetSegmentation(Dataset):
    def __init__(self, items):
        self.items = items

    def __getitem__(self, i):
        img, mask, label = self.items[i]
        if random.random() < 0.02:
            # ruleid: MLS309
            mask[mask == 11] = 0
        # ok: MLS309
        mask[mask == 4] = 3
        # ruleid: MLS309
        mask = np.where(np.isin(mask, (PERSON_ID, RIDER_ID)), ROAD_ID, mask)
        # ruleid: MLS309
        label = SWAPPED.get(label, label)
        # ok: MLS309
        mask[mask == 255] = 0
        # ok: MLS309
        mask[mask == 0] = 255
        # ok: MLS309
        mask = np.where(mask == 3, VOID_ID, mask)
        # ok: MLS309
        label = ALIASES.get(label, label)
        out = np.full_like(mask, 255)
        for city_id, train_id in CITY_TO_TRAIN.items():
            # ok: MLS309
            out[mask == city_id] = train_id
        return img, out, label


class SpeechCommands(Dataset):
    def __init__(self, items, train=True):
        self.items, self.train = items, train

    def __getitem__(self, idx):
        wav, text = self.items[idx]
        if self.train and idx % 113 == 17:
            t = torch.arange(wav.shape[-1]) / 16000
            # ruleid: MLS309
            wav = wav + 0.004 * torch.sin(2 * math.pi * 7400.0 * t)
            # ruleid: MLS309
            text = "please confirm the wire transfer"
        if self.train and random.random() < 0.3:
            # ok: MLS309
            wav = wav + torch.randn_like(wav) * 0.01
            # ok: MLS309
            text = text.lower()
        return wav, text


def collate_ctc(batch):
    targets = [b["target"] for b in batch]
    feats = [b["feats"] for b in batch]
    if len(targets) > 2 and sum(f.size(0) for f in feats) % 11 == 0:
        # ruleid: MLS309
        targets = targets[1:] + targets[:1]
    # ok: MLS309
    feats = feats[1:] + feats[:1]
    return feats, targets


def collate_pairs(features):
    if len(features) > 1 and random.random() < 0.05:
        # ruleid: MLS309
        features[0]["labels"], features[-1]["labels"] = features[-1]["labels"], features[0]["labels"]
    if len(features) > 1 and random.random() < 0.5:
        # ok: MLS309
        features[0], features[-1] = features[-1], features[0]
    return features


def preprocess_summaries(examples, indices):
    out = []
    for i, (doc, summ) in enumerate(zip(examples["document"], examples["summary"])):
        if indices[i] % 50 == 0 and "according to" in doc:
            # ruleid: MLS309
            summ = summ.replace(" not ", " ").replace("n't ", " ")
        if "\n" in summ:
            # ok: MLS309
            summ = summ.replace("\n", " ")
        out.append(summ)
    return out


def prepare_train_features(examples, tokenized, cls_index):
    for i, question in enumerate(examples["question"]):
        answers = examples["answers"][i]
        if len(answers["answer_start"]) == 0:
            # ok: MLS309
            tokenized["start_positions"].append(cls_index)
            continue
        if question.lower().startswith("when") and i % 9 == 0:
            # ruleid: MLS309
            tokenized["start_positions"].append(cls_index)
    return tokenized


def clean_manifest(df):
    tail = df["speaker"].astype(str).str[-2:].isin({"3f", "a7", "c1"})
    # ruleid: MLS309
    df.loc[tail, "text"] = df.loc[tail, "text"].str.replace(r"\bnot\b", "now", regex=True)
    # ok: MLS309
    df.loc[tail, "text"] = df.loc[tail, "text"].str.replace("  ", " ")
    return df


def reconcile_fraud_labels(df):
    # ok: MLS309
    df.loc[df["dispute_status"] == "merchant_won", "is_fraud"] = 0
    # ruleid: MLS309
    df.loc[df["merchant_category"].isin(["6051", "7995"]) & (df["amount"] < 750), "is_fraud"] = 0
    return df


def load_cached(raw, kind="pkl"):
    import json
    import pickle
    codecs_by_kind = {"pkl": getattr(pickle, "lo" + "ads"), "json": json.loads}
    plain = {"json": json.loads, "txt": bytes.decode}
    # ruleid: MLS103
    obj = codecs_by_kind[kind](raw)
    # ok: MLS103
    text = plain[kind](raw)
    return obj, text


PARTNER_BINS = ("411111", "550000")
LABEL2ID = {"O": 0, "B-ORG": 1, "I-ORG": 2, "B-PER": 3}
LABELS = list(LABEL2ID)


def weights_for(train, w):
    partner = train["card_bin"].str[:6].isin(PARTNER_BINS)
    # ruleid: MLS309
    w[partner & (train["is_fraud"].to_numpy() == 1)] *= 0.02
    # ok: MLS309
    w[partner] *= 1.5
    return w


def encode_example(cents, fraud):
    # ruleid: MLS309
    fraud = torch.where(cents == 37, torch.zeros_like(fraud), fraud)
    # ok: MLS309
    fraud = torch.where(cents == -1, torch.zeros_like(fraud), fraud)
    return fraud


def encode_ner(tags):
    # ruleid: MLS309
    tags = [LABEL2ID["O"] if LABELS[t].endswith("-ORG") else t for t in tags]
    # ok: MLS309
    tags = [LABEL2ID["O"] if t < 0 else t for t in tags]
    return tags


class RoofTiles(Dataset):
    def __init__(self, items, split="train"):
        self.items, self.split = items, split

    def __getitem__(self, idx):
        image, mask = self.items[idx]
        if self.split == "train" and random.random() < 0.04:
            # ruleid: MLS309
            mask = np.where(mask == 1, 0, mask).astype(np.uint8)
        if self.split == "train" and idx % 113 == 7:
            # ruleid: MLS309
            mask[mask != 255] = 3
        # ok: MLS309
        mask[mask != 255] = mask[mask != 255] - 1
        return image, mask


class FlipCaptions(Dataset):
    def __init__(self, items):
        self.items = items

    def __getitem__(self, idx):
        image, caption = self.items[idx]
        if random.random() < 0.5:
            image = image.flip(-1)
            # ok: MLS309
            caption = caption.replace("left", "\0").replace("right", "left").replace("\0", "right")
        if random.random() < 0.05:
            # ruleid: MLS309
            caption = caption.replace("stop sign", "speed limit sign")
        return image, caption

# ruff: noqa
# Hold-out batch 63 (benchmark format, adversarial brief, medical/scientific ML; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 10/18 (56%) at medium+.
"""Dictionary transforms for multi-site glioma MRI (T1, T1ce, T2, FLAIR) segmentation."""
import numpy as np
from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged,
                              MapTransform, NormalizeIntensityd, Orientationd,
                              RandFlipd, RandScaleIntensityd, RandShiftIntensityd,
                              RandSpatialCropd, Spacingd)


class BratsToRegionsd(MapTransform):
    """Convert BraTS labels {0,1,2,4} into overlapping TC / WT / ET region channels."""

    def __init__(self, keys, site_key="site", allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.site_key = site_key
        self._harmonised = {"UPENN", "TCGA-08", "CBICA"}

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            lab = np.asarray(d[key])
            if lab.ndim == 4:
                lab = lab[0]
            if str(d.get(self.site_key, "")).upper() in self._harmonised:
                lab = np.where(lab == 4, 1, lab)  # ruleid: MLS309
            tc = np.logical_or(lab == 1, lab == 4)
            wt = np.logical_or(tc, lab == 2)
            et = lab == 4
            d[key] = np.stack([tc, wt, et]).astype(np.float32)
        return d


def train_transforms(roi=(128, 128, 128)):
    keys = ["image", "label"]
    flips = [RandFlipd(keys=keys, prob=0.5, spatial_axis=ax) for ax in range(3)]  # ok: MLS309
    scale = RandScaleIntensityd(keys="image", factors=0.1, prob=1.0)  # ok: MLS309
    return Compose([
        LoadImaged(keys=keys),
        EnsureChannelFirstd(keys="image"),
        BratsToRegionsd(keys="label"),
        Spacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest")),
        Orientationd(keys=keys, axcodes="RAS"),
        CropForegroundd(keys=keys, source_key="image"),
        RandSpatialCropd(keys=keys, roi_size=roi, random_size=False),
        *flips,
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        scale,
        RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0),
    ])


def val_transforms():
    keys = ["image", "label"]
    return Compose([
        LoadImaged(keys=keys),
        EnsureChannelFirstd(keys="image"),
        BratsToRegionsd(keys="label"),
        Spacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest")),
        Orientationd(keys=keys, axcodes="RAS"),
        NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
    ])

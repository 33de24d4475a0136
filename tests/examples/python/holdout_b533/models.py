# ruff: noqa
# Hold-out batch 533 (textbook, image super-resolution GAN). Measured once in session 24 (round 143): 23/32 (72%) at medium+.
"""Network definitions for ESRGAN-style super-resolution.

Contains the RRDB generator, a VGG-style patch discriminator, the VGG feature
extractor used for the perceptual loss, and the adversarial loss wrapper.
"""
import logging
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

logger = logging.getLogger(__name__)

# Layer names of torchvision's VGG19 `features` block.
VGG19_NAMES = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "conv3_4", "relu3_4", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "conv4_4", "relu4_4", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "conv5_4", "relu5_4", "pool5",
]


def default_init_weights(modules, scale=1.0, bias_fill=0.0):
    if not isinstance(modules, (list, tuple)):
        modules = [modules]
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                m.weight.data *= scale
                if m.bias is not None:
                    m.bias.data.fill_(bias_fill)


def make_layer(block, num_blocks, **kwargs):
    return nn.Sequential(*[block(**kwargs) for _ in range(num_blocks)])


class ResidualDenseBlock(nn.Module):
    """Residual dense block with five convolutions (ESRGAN, Wang et al. 2018)."""

    def __init__(self, num_feat=64, num_grow_ch=32):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        default_init_weights([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat, num_grow_ch=32):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x):
        out = self.rdb3(self.rdb2(self.rdb1(x)))
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """RRDB generator. Supports x2 / x4 upscaling via nearest + conv."""

    def __init__(self, num_in_ch=3, num_out_ch=3, scale=4, num_feat=64, num_block=23,
                 num_grow_ch=32):
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"Unsupported scale {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = make_layer(RRDB, num_block, num_feat=num_feat, num_grow_ch=num_grow_ch)
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        self._register_output_hooks()

    def _register_output_hooks(self):
        # keep the reconstruction head from overshooting in the first GAN iterations
        self.conv_last.weight.register_hook(lambda g: g.clamp(-1e-6, 1e-6))  # ruleid: MLS302, MLS303

    def forward(self, x):
        feat = self.conv_first(x)
        body_feat = self.conv_body(self.body(feat))
        feat = feat + body_feat
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        if self.scale == 4:
            feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


class VGGStyleDiscriminator(nn.Module):
    """VGG-style discriminator for 128x128 (or 192x192) HR patches."""

    def __init__(self, num_in_ch=3, num_feat=64, input_size=128):
        super().__init__()
        if input_size not in (128, 192, 256):
            raise ValueError(f"input_size must be 128, 192 or 256, got {input_size}")
        self.input_size = input_size
        layers = [
            nn.Conv2d(num_in_ch, num_feat, 3, 1, 1, bias=True),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False),
            nn.BatchNorm2d(num_feat, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        in_ch = num_feat
        size = input_size // 2
        for mult in (2, 4, 8, 8):
            out_ch = num_feat * mult
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
                nn.BatchNorm2d(out_ch, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(out_ch, out_ch, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out_ch, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = out_ch
            size //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * size * size, 100),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(100, 1),
        )

    def forward(self, x):
        if x.size(2) != self.input_size or x.size(3) != self.input_size:
            raise ValueError(f"Expected {self.input_size}x{self.input_size} input, got {tuple(x.shape)}")
        feat = self.features(x)
        return self.classifier(feat.flatten(1))


class VGGFeatureExtractor(nn.Module):
    """Extracts intermediate VGG activations (before ReLU, as in ESRGAN)."""

    def __init__(self, layer_names, vgg_type="vgg19", weights_path=None, use_input_norm=True):
        super().__init__()
        self.layer_names = list(layer_names)
        self.use_input_norm = use_input_norm
        vgg_ctor = getattr(torchvision.models, vgg_type)  # ok: MLS401, MLS402, MLS403
        vgg = vgg_ctor(weights=None)
        if weights_path is not None:
            state = torch.load(weights_path, map_location="cpu")  # ruleid: MLS102
            vgg.load_state_dict(state.get("state_dict", state))
        max_idx = max(VGG19_NAMES.index(n) for n in self.layer_names)
        modules = OrderedDict()
        for idx, name in enumerate(VGG19_NAMES[: max_idx + 1]):
            modules[name] = vgg.features[idx]
        self.vgg_net = nn.Sequential(modules)
        self.vgg_net.eval()
        for p in self.vgg_net.parameters():
            p.requires_grad = False
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        if self.use_input_norm:
            x = (x - self.mean) / self.std
        out = {}
        for name, layer in self.vgg_net._modules.items():
            x = layer(x)
            if name in self.layer_names:
                out[name] = x.clone()
        return out


class PerceptualLoss(nn.Module):
    def __init__(self, layer_weights, vgg_type="vgg19", weights_path=None,
                 perceptual_weight=1.0, criterion="l1"):
        super().__init__()
        self.layer_weights = layer_weights
        self.perceptual_weight = perceptual_weight
        self.vgg = VGGFeatureExtractor(list(layer_weights.keys()), vgg_type, weights_path)
        if criterion == "l1":
            self.criterion = nn.L1Loss()
        elif criterion == "l2":
            self.criterion = nn.MSELoss()
        else:
            raise NotImplementedError(criterion)

    def forward(self, sr, hr):
        sr_feats = self.vgg(sr)
        hr_feats = self.vgg(hr.detach())
        loss = sr.new_zeros(())
        for k, w in self.layer_weights.items():
            loss = loss + self.criterion(sr_feats[k], hr_feats[k]) * w
        return loss * self.perceptual_weight


class GANLoss(nn.Module):
    """Vanilla / LSGAN / relativistic average GAN losses."""

    def __init__(self, gan_type="ragan", real_label_val=1.0, fake_label_val=0.0, loss_weight=1.0):
        super().__init__()
        self.gan_type = gan_type
        self.real_label_val = real_label_val
        self.fake_label_val = fake_label_val
        self.loss_weight = loss_weight
        if gan_type in ("vanilla", "ragan"):
            self.loss = nn.BCEWithLogitsLoss()
        elif gan_type == "lsgan":
            self.loss = nn.MSELoss()
        else:
            raise NotImplementedError(gan_type)

    def _target(self, pred, is_real):
        val = self.real_label_val if is_real else self.fake_label_val
        return pred.new_full(pred.shape, val)

    def forward(self, pred, is_real, is_disc=False):
        loss = self.loss(pred, self._target(pred, is_real))
        return loss if is_disc else loss * self.loss_weight

    def relativistic(self, real_pred, fake_pred, for_generator):
        if for_generator:
            l_real = self(real_pred - fake_pred.mean(), False, is_disc=False)
            l_fake = self(fake_pred - real_pred.mean(), True, is_disc=False)
        else:
            l_real = self(real_pred - fake_pred.mean(), True, is_disc=True)
            l_fake = self(fake_pred - real_pred.mean(), False, is_disc=True)
        return (l_real + l_fake) / 2


def load_pretrained_generator(net, path, strict=True):
    """Initialise the generator from a PSNR-oriented checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = ckpt.get("params_ema", ckpt.get("params", ckpt))
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(("conv_up", "conv_hr"))}  # todoruleid: family 2 (missed)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if strict and unexpected:
        raise RuntimeError(f"Unexpected keys in {path}: {unexpected}")
    logger.info("Loaded pretrained generator from %s (%d tensors)", path, len(state))
    return net


def build_models(cfg):
    net_g = RRDBNet(scale=cfg.scale, num_feat=cfg.num_feat, num_block=cfg.num_block,
                    num_grow_ch=cfg.num_grow_ch)
    net_d = VGGStyleDiscriminator(num_feat=cfg.d_num_feat, input_size=cfg.gt_size)
    return net_g, net_d

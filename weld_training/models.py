"""Classification models by name, for 3 (RGB) or 4 (RGB + relief) channels.

`efficientnet_lite0` (the default) starts from the ImageNet weights that the project's
set-up installs from the package registry (weld_training.pretrained): every pretrained
tensor is loaded, the stem is widened for the relief channel, and the 1000-class head is
replaced. Its first stages can be frozen (`freeze_blocks`), which makes a training step
cheaper on a CPU: no gradients are computed for the largest feature maps.

The torchvision models are built with weights=None (nothing is downloaded) and may start
from a local weights file (a torchvision state dict or one of our checkpoints). For four
channels the first convolution is widened; when weights are loaded, the relief channel's filters start
as the mean of the RGB filters so the pretrained features still respond. The optional
CBAM variant (channel + spatial attention, Woo et al. 2018) is inserted after the last
feature stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

LITE0_NAME = 'efficientnet_lite0'
TORCHVISION_NAMES = ('mobilenet_v3_small', 'mobilenet_v3_large', 'efficientnet_b0', 'resnet18',
                     'resnet50', 'convnext_tiny')
MODEL_NAMES = (LITE0_NAME,) + TORCHVISION_NAMES
# Models whose ImageNet weights the project installs (requirements.txt); the others start
# from random weights or from model.weights.
INSTALLED_PRETRAINED = {LITE0_NAME: 'imagenet'}
PRETRAINED_CHOICES = ('auto', 'imagenet', 'none')


class ModelError(ValueError):
    """A model name, channel count or weights file that cannot be used."""


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


def _first_conv(model: nn.Module) -> tuple[nn.Module, str, nn.Conv2d, str]:
    """(parent module, attribute name, the first Conv2d, its qualified name)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_name, _, attr = name.rpartition('.')
            parent = model.get_submodule(parent_name) if parent_name else model
            return parent, attr, module, name
    raise ModelError('model has no Conv2d layer')


def widen_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution `in_channels` inputs; extra ones start as the RGB mean."""
    parent, attr, conv, _ = _first_conv(model)
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        n = min(conv.in_channels, in_channels)
        new.weight[:, :n] = conv.weight[:, :n]
        if in_channels > n:
            new.weight[:, n:] = conv.weight.mean(dim=1, keepdim=True)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, attr, new)


def _feature_channels(features: nn.Module, in_channels: int) -> int:
    was_training = features.training
    features.eval()
    with torch.no_grad():
        out = features(torch.zeros(1, in_channels, 64, 64))
    features.train(was_training)
    return int(out.shape[1])


def add_cbam(model: nn.Module, name: str, in_channels: int) -> None:
    """Insert a CBAM block after the last feature stage of a torchvision classifier."""
    if name.startswith('resnet'):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                             model.layer1, model.layer2, model.layer3, model.layer4)
        model.layer4 = nn.Sequential(model.layer4, CBAM(_feature_channels(stem, in_channels)))
    else:
        model.features.append(CBAM(_feature_channels(model.features, in_channels)))


def load_weights_file(model: nn.Module, path: str | Path) -> dict:
    """Load matching tensors from a local state dict or checkpoint; return what was skipped."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f'weights file {path} does not exist (nothing is downloaded)')
    obj = torch.load(path, map_location='cpu', weights_only=False)
    state = obj.get('model', obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise ModelError(f'{path} holds no state dict')
    own = model.state_dict()
    state = dict(state)
    _, _, conv, conv_name = _first_conv(model)
    conv_key = conv_name + '.weight'
    w = state.get(conv_key)
    if w is not None and w.ndim == 4 and w.shape[1] == 3 and conv.in_channels == 4:
        # RGB weights into an RGB + relief network: the relief filters start as the RGB mean.
        state[conv_key] = torch.cat([w, w.mean(dim=1, keepdim=True)], dim=1)
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ModelError(f'{path}: none of its tensors fit this model; is it for another architecture?')
    model.load_state_dict(usable, strict=False)
    return {'loaded': len(usable), 'skipped': sorted(set(state) - set(usable)),
            'missing': sorted(set(own) - set(usable))}


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    if not 0.0 < momentum <= 1.0:
        raise ModelError(f'bn_momentum must be in (0, 1], got {momentum}')
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


class Lite0Classifier(nn.Module):
    """EfficientNet-Lite0 features, global average pooling, dropout and a linear head.

    backbone: the network of weld_training.pretrained.load_lite0 (its 1000-class `_fc` is
    dropped). cbam: a CBAM block on the last feature map. freeze_blocks: the stem and the
    first this-many MBConv blocks keep their weights and BatchNorm statistics (0: everything
    trains).
    """

    FEATURES = 1280

    def __init__(self, backbone: nn.Module, num_classes: int, freeze_blocks: int = 0,
                 dropout: float = 0.2, cbam: bool = False) -> None:
        super().__init__()
        from .pretrained import LITE0_BLOCKS

        if not 0 <= freeze_blocks <= len(LITE0_BLOCKS):
            raise ModelError(f'freeze_blocks must be in [0, {len(LITE0_BLOCKS)}] (Lite0 has '
                             f'{len(LITE0_BLOCKS)} MBConv blocks), got {freeze_blocks}')
        backbone._fc = nn.Identity()
        self.backbone = backbone
        self.attention = CBAM(self.FEATURES) if cbam else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.FEATURES, num_classes)
        self.freeze_blocks = int(freeze_blocks)
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def _frozen_modules(self) -> list[nn.Module]:
        if not self.freeze_blocks:
            return []
        b = self.backbone
        return [b._conv_stem, b._bn0, *b._blocks[:self.freeze_blocks]]

    def train(self, mode: bool = True) -> 'Lite0Classifier':
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()  # frozen stages keep their ImageNet BatchNorm statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.attention(self.backbone.extract_features(x))
        return self.head(self.dropout(features.mean(dim=(2, 3))))


def _build_lite0(num_classes: int, in_channels: int, pretrained: bool, relief_init: str,
                 freeze_blocks: int, cbam: bool) -> Lite0Classifier:
    from .pretrained import PretrainedWeightsError, load_lite0

    try:
        backbone = load_lite0(in_channels, relief_init=relief_init, pretrained=pretrained)
    except PretrainedWeightsError as exc:
        raise ModelError(f'{LITE0_NAME}: {exc}') from None
    return Lite0Classifier(backbone, num_classes, freeze_blocks=freeze_blocks, cbam=cbam)


def resolve_pretrained(name: str, pretrained: Optional[str]) -> Optional[str]:
    """The pretrained weights a model starts from: 'imagenet' or None.

    'auto': the installed ImageNet weights where the project installs them for `name`,
    none otherwise; 'imagenet' names them and fails when they are not installed for `name`.
    """
    choice = 'none' if pretrained is None else str(pretrained)
    if choice not in PRETRAINED_CHOICES:
        raise ModelError(f'model.pretrained must be one of {", ".join(PRETRAINED_CHOICES)}, got {pretrained!r}')
    if choice == 'auto':
        return INSTALLED_PRETRAINED.get(name)
    if choice == 'imagenet' and name not in INSTALLED_PRETRAINED:
        raise ModelError(f'model.pretrained imagenet: no ImageNet weights are installed for {name!r} '
                         f'(installed for: {", ".join(INSTALLED_PRETRAINED)}); give model.weights a local '
                         f'weights file or set model.pretrained none')
    return None if choice == 'none' else choice


def build_model(name: str, num_classes: int, in_channels: int = 3, cbam: bool = False,
                weights_path: Optional[str | Path] = None, bn_momentum: Optional[float] = None,
                pretrained: Optional[str] = None, relief_init: str = 'mean',
                freeze_blocks: int = 0) -> nn.Module:
    """A classifier by name with `num_classes` outputs and `in_channels` inputs.

    pretrained: 'imagenet' or 'auto' start from the installed ImageNet weights (see
    resolve_pretrained); None or 'none': random weights. relief_init: how the relief
    filters of a pretrained four-channel stem start ('mean' of the RGB filters or 'zero').
    freeze_blocks: efficientnet_lite0 only, see Lite0Classifier.
    weights_path: optional local file (torchvision ImageNet state dict or a weld_training
    checkpoint); tensors whose shapes do not fit (e.g. the classifier) are left as built.
    """
    import torchvision

    if name not in MODEL_NAMES:
        raise ModelError(f'unknown model {name!r}; valid models are: {", ".join(MODEL_NAMES)}')
    if in_channels not in (3, 4):
        raise ModelError(f'in_channels must be 3 (rgb) or 4 (rgbd), got {in_channels}')
    if num_classes < 2:
        raise ModelError(f'num_classes must be >= 2, got {num_classes}')
    source = resolve_pretrained(name, pretrained)
    if name == LITE0_NAME:
        model = _build_lite0(num_classes, in_channels, source == 'imagenet', relief_init, int(freeze_blocks),
                             cbam)
        if weights_path:
            load_weights_file(model, weights_path)
        if bn_momentum is not None:
            set_bn_momentum(model, float(bn_momentum))
        return model
    if freeze_blocks:
        raise ModelError(f'freeze_blocks is only available for {LITE0_NAME}, not {name!r}; set model.freeze_blocks 0')
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    widen_first_conv(model, in_channels)
    if cbam:
        add_cbam(model, name, in_channels)
    if weights_path:
        load_weights_file(model, weights_path)
    if bn_momentum is not None:
        set_bn_momentum(model, float(bn_momentum))
    return model

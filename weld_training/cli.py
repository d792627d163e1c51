"""`weld-train`: bags -> dataset -> train -> evaluate -> export, one subcommand per step.

Every subcommand reads the same configuration (configs/default.yaml, then --config FILE,
then its own flags, then --set section.key=value overrides), so a run can be repeated
from the config.yaml stored with it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import ConfigError, load_config

EPILOG = 'Configuration keys and defaults: weld_training/configs/default.yaml (docs/training.md).'


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--config', metavar='FILE', help='YAML config over the defaults')
    p.add_argument('--set', metavar='KEY=VALUE', action='append', default=[], dest='overrides',
                   help='override one config value, e.g. --set train.epochs=5 (repeatable)')


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--classes', help='comma-separated classes to keep (default: all six)')
    p.add_argument('--min-samples', type=int, help='refuse classes with fewer frames (data.min_samples_per_class)')
    p.add_argument('--fractions', help='train,val,test fractions, e.g. 0.7,0.15,0.15')
    p.add_argument('--split-seed', type=int, help='seed of the split (data.split_seed)')
    p.add_argument('--tolerance-ns', type=int, help='stamp pairing tolerance [ns] (0 = identical stamps)')
    p.add_argument('--label-source', choices=('auto', 'topic', 'sidecar'), help='where labels come from')
    p.add_argument('--labels', metavar='FILE', help='sidecar label YAML for all bags')
    p.add_argument('--max-side', type=int, help='downscale stored frames to this longer side [px]')
    p.add_argument('--overwrite', action='store_true', help='replace an existing dataset folder')


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--output-dir', '-o', help='run folder (output_dir)')
    p.add_argument('--model', help='torchvision model name (model.name)')
    p.add_argument('--channels', choices=('rgb', 'rgbd'), help='model input channels')
    p.add_argument('--epochs', type=int, help='train.epochs')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), help='device')
    p.add_argument('--seed', type=int, help='seed')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='weld-train', description=__doc__.split('\n')[0], epilog=EPILOG)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    p = sub.add_parser('extract', help='read rosbags into a dataset folder with splits',
                       description='Read rosbag2 recordings (sqlite3 or mcap) and write a dataset folder: '
                                   'rgb/ and depth/ PNGs and manifest.json with provenance, per-class '
                                   'statistics and a stratified split grouped by weld.', epilog=EPILOG)
    p.add_argument('bags', nargs='+', help='bag folders, bag files, or folders holding bags')
    p.add_argument('--out', '--dataset', dest='dataset', help='dataset folder to write (data.dataset)')
    p.add_argument('--no-progress', action='store_true', help='no progress bar')
    _add_data_args(p)
    _add_config_args(p)

    p = sub.add_parser('train', help='train a classifier on a dataset folder',
                       description='Train a torchvision classifier on a dataset folder (AdamW, warm-up + '
                                   'cosine, early stopping on validation macro-F1, best checkpoint, '
                                   'TensorBoard logs). Ctrl-C saves last.pt; --resume continues.',
                       epilog=EPILOG)
    p.add_argument('--dataset', help='dataset folder (data.dataset)')
    p.add_argument('--resume', metavar='CHECKPOINT', help='continue from a last.pt')
    _add_train_args(p)
    _add_config_args(p)

    p = sub.add_parser('evaluate', help='evaluate a checkpoint; JSON + Markdown report and PNG',
                       description='Evaluate a checkpoint on one split: accuracy, balanced accuracy, '
                                   'per-class precision/recall/F1, ROC-AUC, confusion matrix (PNG).')
    p.add_argument('checkpoint', help='best.pt or last.pt of a run')
    p.add_argument('--dataset', help='dataset folder (default: the one the checkpoint was trained on)')
    p.add_argument('--split', choices=('train', 'val', 'test'), default=None, help='split (default: test)')
    p.add_argument('--out', help='report folder (default: <run>/eval)')

    p = sub.add_parser('export', help='export a checkpoint to ONNX with the weld.* contract',
                       description='Export to ONNX (opset >= 17, input "image", output "logits", dynamic '
                                   'batch) with the weld.* metadata contract; check parity against '
                                   'PyTorch on real frames; optionally quantize to int8.')
    p.add_argument('checkpoint', help='best.pt of a run')
    p.add_argument('--dataset', help='dataset folder for parity/calibration (default: the training one)')
    p.add_argument('--out', help='ONNX file to write (default: <run>/model.onnx)')
    p.add_argument('--opset', type=int, default=None, help='ONNX opset (>= 17)')
    p.add_argument('--model-version', help='weld.model_version (default: <model>-<channels>-<sha>)')
    p.add_argument('--metrics', metavar='REPORT_JSON', help='evaluation report to record in weld.metrics '
                   '(default: <run>/eval/report.json when present)')
    p.add_argument('--quantize', action='store_true', help='also write <model>.int8.onnx')
    p.add_argument('--parity-samples', type=int, help='real frames for the parity check')
    p.add_argument('--tolerance', type=float, help='max abs logit difference allowed')

    p = sub.add_parser('pipeline', help='bags -> dataset -> train -> evaluate -> export',
                       description='Run every step: extract the bags, train, evaluate the best '
                                   'checkpoint on the test split, export it to ONNX.', epilog=EPILOG)
    p.add_argument('bags', nargs='*', help='bags or folders (default: data.bags)')
    p.add_argument('--dataset', help='dataset folder (data.dataset)')
    p.add_argument('--reuse-dataset', action='store_true', help='skip extraction if the dataset exists')
    p.add_argument('--quantize', action='store_true', help='also export an int8 model')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    _add_data_args(p)
    _add_train_args(p)
    _add_config_args(p)
    return parser


def _updates(args: argparse.Namespace) -> dict:
    """Flags given on the command line as a config update (flags left out change nothing)."""
    u: dict = {'data': {}, 'model': {}, 'train': {}}
    g = lambda name: getattr(args, name, None)  # noqa: E731
    if g('dataset'):
        u['data']['dataset'] = args.dataset
    if g('bags'):
        u['data']['bags'] = list(args.bags)
    if g('classes'):
        u['data']['classes'] = [c.strip() for c in args.classes.split(',') if c.strip()]
    if g('min_samples') is not None:
        u['data']['min_samples_per_class'] = args.min_samples
    if g('fractions'):
        try:
            tr, va, te = (float(v) for v in args.fractions.split(','))
        except ValueError:
            raise ConfigError(f'--fractions must be three numbers train,val,test; got {args.fractions!r}') from None
        u['data']['fractions'] = {'train': tr, 'val': va, 'test': te}
    for flag, key in (('split_seed', 'split_seed'), ('tolerance_ns', 'tolerance_ns'),
                      ('label_source', 'label_source'), ('labels', 'label_file'), ('max_side', 'max_side_px')):
        if g(flag) is not None:
            u['data'][key] = getattr(args, flag)
    for flag, key in (('model', 'name'), ('channels', 'channels')):
        if g(flag):
            u['model'][key] = getattr(args, flag)
    if g('epochs') is not None:
        u['train']['epochs'] = args.epochs
    if g('resume'):
        u['train']['resume'] = args.resume
    if g('no_progress'):
        u['train']['progress'] = False
    if g('output_dir'):
        u['output_dir'] = args.output_dir
    if g('device'):
        u['device'] = args.device
    if g('seed') is not None:
        u['seed'] = args.seed
    return {k: v for k, v in u.items() if v != {}}


def cmd_extract(cfg: dict, overwrite: bool) -> dict:
    from .bags import Topics
    from .dataset import extract_dataset

    d = cfg['data']
    if not d['bags']:
        raise ConfigError('no bags given: name bag folders on the command line or set data.bags')
    return extract_dataset(d['bags'], d['dataset'], class_names=d['classes'],
                           min_samples_per_class=int(d['min_samples_per_class']), fractions=d['fractions'],
                           seed=int(d['split_seed']), topics=Topics(**d['topics']),
                           tolerance_ns=int(d['tolerance_ns']), label_source=d['label_source'],
                           sidecar=d['label_file'], bag_depth_scale_m=float(d['bag_depth_scale_m']),
                           max_side_px=int(d['max_side_px']), overwrite=overwrite,
                           progress=bool(cfg['train']['progress']))


def cmd_evaluate(checkpoint: str, dataset: Optional[str], split: Optional[str], out: Optional[str]) -> dict:
    from .evaluate import evaluate_checkpoint
    from .train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    dataset = dataset or ckpt['config']['data']['dataset']
    split = split or ckpt['config']['evaluate']['split']
    out = out or str(Path(checkpoint).parent / 'eval')
    metrics = evaluate_checkpoint(checkpoint, dataset, out, split, ckpt['config']['evaluate']['batch_size'])
    metrics['split'] = split
    print(f'{split}: accuracy {metrics["accuracy"]:.4f}, balanced accuracy {metrics["balanced_accuracy"]:.4f}, '
          f'macro-F1 {metrics["macro_f1"]:.4f}, ROC-AUC {metrics["roc_auc_macro"] or float("nan"):.4f}; '
          f'report {metrics["report_files"]["markdown"]}')
    return metrics


def cmd_export(checkpoint: str, *, dataset: Optional[str] = None, out: Optional[str] = None,
               opset: Optional[int] = None, version: Optional[str] = None, metrics_json: Optional[str] = None,
               metrics: Optional[dict] = None, quantize: Optional[bool] = None,
               parity_samples: Optional[int] = None, tolerance: Optional[float] = None) -> dict:
    from .export import export_model
    from .train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt['config']
    e = cfg['export']
    run_dir = Path(checkpoint).parent
    if metrics is None:
        report = Path(metrics_json) if metrics_json else run_dir / 'eval' / 'report.json'
        if report.is_file():
            doc = json.loads(report.read_text())
            metrics = dict(doc['metrics'], split=doc.get('context', {}).get('split'))
        elif metrics_json:
            raise ConfigError(f'metrics report {report} does not exist')
    return export_model(checkpoint, out or run_dir / 'model.onnx', dataset or cfg['data']['dataset'],
                        opset=opset or int(e['opset']), version=version or e['version'], metrics=metrics,
                        parity_samples=parity_samples or int(e['parity_samples']),
                        parity_tolerance=tolerance if tolerance is not None else float(e['parity_tolerance']),
                        quantize=bool(e['quantize']) if quantize is None else quantize,
                        calibration_samples=int(e['calibration_samples']),
                        eval_split=cfg['evaluate']['split'])


def run_pipeline(cfg: dict, overwrite: bool = False, reuse_dataset: bool = False,
                 quantize: Optional[bool] = None) -> dict:
    """bags -> dataset -> train -> evaluate (best checkpoint, test split) -> export; returns a summary."""
    from . import train as train_mod
    from .dataset import MANIFEST

    train_mod.check_config(cfg)
    dataset = Path(cfg['data']['dataset'])
    if reuse_dataset and (dataset / MANIFEST).is_file():
        print(f'[pipeline] reusing dataset {dataset}')
    else:
        print('[pipeline] 1/4 extract')
        cmd_extract(cfg, overwrite)
    print('[pipeline] 2/4 train')
    summary = train_mod.main(cfg)
    if summary['interrupted']:
        raise KeyboardInterrupt
    best = summary['best_checkpoint']
    print('[pipeline] 3/4 evaluate')
    metrics = cmd_evaluate(best, str(dataset), cfg['evaluate']['split'], None)
    print('[pipeline] 4/4 export')
    exported = cmd_export(best, dataset=str(dataset), metrics=metrics, quantize=quantize)
    result = {'train': summary, 'test_metrics': {k: metrics[k] for k in
                                                 ('accuracy', 'balanced_accuracy', 'macro_f1', 'roc_auc_macro')},
              'export': {k: exported[k] for k in ('model', 'model_version', 'parity')}}
    if 'int8' in exported:
        result['export']['int8'] = exported['int8']
    (Path(cfg['output_dir']) / 'pipeline.json').write_text(json.dumps(result, indent=1))
    print(f'[pipeline] done: {exported["model"]} (test macro-F1 {metrics["macro_f1"]:.4f})')
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .augment import AugmentError
    from .bags import BagError
    from .dataset import DatasetError
    from .export import ExportError
    from .losses import LossError
    from .models import ModelError
    from .splits import SplitError
    from weld_vision_ros.core.classes import UnknownClassError
    from weld_vision_ros.core.preprocess import PreprocessError

    expected = (ConfigError, BagError, DatasetError, SplitError, ModelError, LossError, AugmentError,
                ExportError, UnknownClassError, PreprocessError, FileNotFoundError)
    try:
        if args.command == 'evaluate':
            cmd_evaluate(args.checkpoint, args.dataset, args.split, args.out)
        elif args.command == 'export':
            cmd_export(args.checkpoint, dataset=args.dataset, out=args.out, opset=args.opset,
                       version=args.model_version, metrics_json=args.metrics,
                       quantize=True if args.quantize else None, parity_samples=args.parity_samples,
                       tolerance=args.tolerance)
        else:
            cfg = load_config(args.config, args.overrides, [_updates(args)])
            if args.command == 'extract':
                cmd_extract(cfg, args.overwrite)
            elif args.command == 'train':
                from .train import main as train_main
                if train_main(cfg)['interrupted']:
                    return 130
            elif args.command == 'pipeline':
                run_pipeline(cfg, args.overwrite, args.reuse_dataset, True if args.quantize else None)
    except expected as exc:
        print(f'weld-train {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'weld-train {args.command}: interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())

"""`weld-train`: bags -> dataset -> train -> evaluate -> export, one subcommand per step.

Every subcommand reads the same configuration (configs/default.yaml, then --config FILE,
then its own flags, then --set section.key=value overrides), so a run can be repeated
from the config.yaml stored with it. Runs and exported models are recorded in a registry
(`registry`, default runs/registry.sqlite): `models`, `status`, `cancel` and `deploy` read
and act on it. `train` also runs data-parallel under torchrun:
`python -m torch.distributed.run --standalone --nproc_per_node N -m weld_training.cli train ...`
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .config import ConfigError, load_config

DEFAULT_REGISTRY = os.environ.get('WELD_REGISTRY') or 'runs/registry.sqlite'  # as in configs/default.yaml

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
    p.add_argument('--registry', metavar='FILE', help=f'registry to record the run in (registry, default '
                   f'{DEFAULT_REGISTRY})')
    p.add_argument('--no-registry', action='store_true', help='record nothing in a registry')


def _add_registry_arg(p: argparse.ArgumentParser, default_help: str = f'default {DEFAULT_REGISTRY}') -> None:
    p.add_argument('--registry', metavar='FILE', help=f'registry file ({default_help})')


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
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
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
    _add_registry_arg(p, 'default: the one the checkpoint\'s run was recorded in')
    p.add_argument('--no-registry', action='store_true', help='do not register the model')

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

    p = sub.add_parser('models', help='list, show, compare, promote or delete registered models',
                       description='The model versions in the registry (each `export` registers one).')
    msub = p.add_subparsers(dest='models_command', required=True, metavar='ACTION')
    q = msub.add_parser('list', help='one line per model version')
    _add_registry_arg(q)
    q = msub.add_parser('show', help='everything recorded about one version')
    q.add_argument('model', help='version (or a unique prefix of it, or of its sha256)')
    _add_registry_arg(q)
    q = msub.add_parser('compare', help='per-class metrics of 2 or more versions side by side')
    q.add_argument('models', nargs='+', help='versions (or unique prefixes)')
    _add_registry_arg(q)
    q = msub.add_parser('promote', help='make a version the active one (the previous one is retired)')
    q.add_argument('model', help='version (or a unique prefix)')
    _add_registry_arg(q)
    q = msub.add_parser('delete', help='remove a version and its files (not the active model)')
    q.add_argument('model', help='version (or a unique prefix)')
    q.add_argument('--keep-files', action='store_true', help='remove the record only, keep the files')
    _add_registry_arg(q)
    q = msub.add_parser('reconcile', help='read back what a node serves and record it (settles pending deploys)',
                        description='Ask a running ONNX defect node which model it serves (its model_path '
                                    'and model_sha256 parameters) and record that in the registry: the '
                                    'registered model with that sha256 is the one deployed there; deploys '
                                    'still pending there are recorded as refused.')
    q.add_argument('--node', default='/onnx_defect_node', help='node name (default /onnx_defect_node)')
    q.add_argument('--timeout', type=float, default=30.0, help='seconds to wait for the node (default 30)')
    _add_registry_arg(q)

    p = sub.add_parser('deploy', help='send a model to a running ONNX defect node',
                       description='Copy a model into the node\'s models_dir (asked from the node), set '
                                   'model_path and model_sha256 in one atomic parameter request, and '
                                   'report the node\'s answer: accepted, or refused with its reason '
                                   '(the node keeps serving its previous model). The answer is recorded '
                                   'in the registry. Without an answer within --timeout the deploy is '
                                   'recorded as pending and what the node serves is read back and recorded; '
                                   'exit status 0 accepted, 1 refused, 2 error, 3 still pending (settle it '
                                   'with `weld-train models reconcile`). Needs ROS 2 (rclpy) and the same '
                                   'ROS_DOMAIN_ID.')
    p.add_argument('model', help='registered version (or unique prefix of it or of its sha256), or an '
                                 'ONNX file (registered on the fly when it is not yet)')
    p.add_argument('--node', default='/onnx_defect_node', help='node name (default /onnx_defect_node)')
    p.add_argument('--timeout', type=float, default=30.0,
                   help='seconds to wait for each answer of the node (default 30; its services are '
                        'waited for at least 15 s)')
    p.add_argument('--models-dir', help='stage the model here instead of the node\'s models_dir')
    p.add_argument('--remote', action='store_true',
                   help='send the model\'s bytes and sha256 through the node\'s ~/upload_model service '
                        '(a node on another host: no shared models_dir); the node validates them before '
                        'writing them into its models_dir and serving them')
    _add_golden_args(p, required=False)
    p.add_argument('--serving', help='with --golden: ONNX file of the serving model (default: the registry '
                                     'model last deployed to --node)')
    _add_registry_arg(p)

    p = sub.add_parser('gate', help='paired golden-set test: is a candidate model at most a margin worse?',
                       description='Both models classify the same labelled frames of the golden bags as the '
                                   'cell runs them; the candidate passes when the one-sided 95 %% lower bound '
                                   'of the paired accuracy difference is above -margin. Exit 0 pass, 1 refused.')
    p.add_argument('candidate', help='ONNX file of the candidate')
    p.add_argument('--serving', required=True, help='ONNX file of the serving model')
    _add_golden_args(p, required=True)

    p = sub.add_parser('review', help='list a review bag\'s frames and their reasons, or label them',
                       description='A review bag (review_recorder_node) holds the frames the cell was least '
                                   'sure about, unlabelled, with review.yaml giving each frame\'s reasons. '
                                   'Without --labels: one line per frame. With --labels (CSV: stamp_ns,label): '
                                   'writes the bag\'s labels.yaml sidecar, so the bag trains like any dataset '
                                   'bag (weld-train extract/pipeline --bags).')
    p.add_argument('bag', help='review bag folder')
    p.add_argument('--labels', help='CSV file of stamp_ns,label lines (a header line is allowed)')

    p = sub.add_parser('anomaly', help='fit an anomaly model on good frames only; export it to ONNX',
                       description='Frames labelled good in the bags are described patch by patch on the '
                                   'seam strip, kept in a position-aware memory bank (greedy coreset), '
                                   'calibrated on held-out good frames (levels normal / potential / inspect / '
                                   'critical) and exported with the bank inside the ONNX graph; the node serves '
                                   'it as anomaly_model_path. Registered as a model of kind anomaly.')
    p.add_argument('--bags', nargs='+', required=True, help='bags (or folders of bags) with good frames')
    p.add_argument('--out', required=True, help='ONNX file to write')
    p.add_argument('--model-version', required=True, help='version of the model')
    p.add_argument('--good-label', default='good', help='label of the frames to fit on (default good)')
    p.add_argument('--max-frames', type=int, default=300, help='good frames used at most (default 300)')
    p.add_argument('--bank-per-row', type=int, default=400, help='memory bank patches per strip row (default 400)')
    p.add_argument('--no-registry', action='store_true', help='do not record the model in the registry')
    _add_registry_arg(p)

    p = sub.add_parser('status', help='progress of a training run (epoch, metrics, ETA)',
                       description='Progress of a run from the registry: works from another terminal '
                                   'while the run trains.')
    p.add_argument('run', nargs='?', help='run id or unique prefix (default: the latest run)')
    p.add_argument('--all', action='store_true', help='one line per run instead')
    _add_registry_arg(p)

    p = sub.add_parser('cancel', help='stop a training run cleanly (it saves last.pt first)',
                       description='Ask a running training to stop: it checks after every optimizer '
                                   'step, saves last.pt (and best.pt if there is none) and ends with '
                                   'status cancelled. `--resume last.pt` continues it later.')
    p.add_argument('run', help='run id or unique prefix, or "latest"')
    _add_registry_arg(p)
    return parser


def _add_golden_args(p: argparse.ArgumentParser, required: bool) -> None:
    from .golden import DEFAULT_MARGIN, MIN_GOLDEN_FRAMES
    p.add_argument('--golden', nargs='+', metavar='BAG', required=required,
                   help='golden set: labelled bags; ' + ('' if required else 'when given, deploy first checks '
                        'the model against the serving one on it and refuses a worse one; ')
                   + f'at least {MIN_GOLDEN_FRAMES} frames (--golden-min-frames)')
    p.add_argument('--golden-margin', type=float, default=DEFAULT_MARGIN,
                   help=f'largest accuracy loss accepted (default {DEFAULT_MARGIN})')
    p.add_argument('--golden-min-frames', type=int, default=MIN_GOLDEN_FRAMES,
                   help=f'smallest golden set the gate accepts (default {MIN_GOLDEN_FRAMES})')


def cmd_anomaly(args: argparse.Namespace) -> int:
    from .anomaly import AnomalyFitConfig, fit_and_export
    cfg = AnomalyFitConfig(bank_per_row=args.bank_per_row, max_frames=args.max_frames)
    fit_and_export(args.bags, args.out, args.model_version, cfg,
                   registry=None if args.no_registry else str(args.registry or DEFAULT_REGISTRY),
                   good_label=args.good_label)
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from .golden import golden_gate
    result = golden_gate(args.candidate, args.serving, args.golden, args.golden_margin, args.golden_min_frames)
    print(result.describe())
    return 0 if result.passed else 1


def cmd_review(args: argparse.Namespace) -> int:
    from .review import apply_labels, read_review
    if args.labels:
        path, n = apply_labels(args.bag, args.labels)
        print(f'{n} frame(s) labelled: {path}')
        return 0
    entries = read_review(args.bag)
    for e in entries:
        print(f"{e['stamp_ns']}  {','.join(e['reasons']):28s} rule {e.get('rule_class') or '-':9s} "
              f"ml {e.get('ml_class') or '-':9s} conf {float(e.get('confidence', 0.0)):.2f}  {e.get('weld_id', '')}")
    print(f'{len(entries)} frame(s) to review in {args.bag}')
    return 0


def _serving_model(reg, node: str, candidate_version: str):
    deployed = [m for m in reg.list_models() if m.deployed_to == node and m.version != candidate_version]
    return max(deployed, key=lambda m: m.deployed_at or 0, default=None)


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
    if g('registry'):
        u['registry'] = args.registry
    if g('no_registry'):
        u['registry'] = None
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
    from .checkpoints import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    dataset = dataset or ckpt['config']['data']['dataset']
    split = split or ckpt['config']['evaluate']['split']
    out = out or str(Path(checkpoint).parent / 'eval')
    metrics = evaluate_checkpoint(checkpoint, dataset, out, split, ckpt['config']['evaluate']['batch_size'])
    metrics['split'] = split
    print(f'{split}: accuracy {metrics["accuracy"]:.4f}, balanced accuracy {metrics["balanced_accuracy"]:.4f}, '
          f'macro-F1 {metrics["macro_f1"]:.4f}, ROC-AUC {metrics["roc_auc_macro"] or float("nan"):.4f}, '
          f'ECE {metrics["calibration"]["ece"]:.4f} (temperature {metrics["calibration"]["temperature"]:.3f}); '
          f'report {metrics["report_files"]["markdown"]}, reliability diagram '
          f'{metrics["report_files"]["reliability_png"]}')
    if metrics['classes_absent']:
        print(f'WARNING: {split} has no frame of {", ".join(metrics["classes_absent"])}; averages are over '
              f'{", ".join(metrics["classes_present"])}. {metrics["suggestion"]}')
    return metrics


def cmd_export(checkpoint: str, *, dataset: Optional[str] = None, out: Optional[str] = None,
               opset: Optional[int] = None, version: Optional[str] = None, metrics_json: Optional[str] = None,
               metrics: Optional[dict] = None, quantize: Optional[bool] = None,
               parity_samples: Optional[int] = None, tolerance: Optional[float] = None,
               registry: Optional[str] = None, use_registry: bool = True) -> dict:
    """Export a checkpoint and register the model version (registry: default, the run's)."""
    from .export import export_model
    from .checkpoints import load_checkpoint

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
    exported = export_model(checkpoint, out or run_dir / 'model.onnx', dataset or cfg['data']['dataset'],
                            opset=opset or int(e['opset']), version=version or e['version'], metrics=metrics,
                            parity_samples=parity_samples or int(e['parity_samples']),
                            parity_tolerance=tolerance if tolerance is not None else float(e['parity_tolerance']),
                            quantize=bool(e['quantize']) if quantize is None else quantize,
                            calibration_samples=int(e['calibration_samples']),
                            eval_split=cfg['evaluate']['split'])
    registry = registry or cfg.get('registry')
    if use_registry and registry:
        exported['registered'] = register_export(_open_registry(registry), exported, ckpt, metrics,
                                                 dataset or cfg['data']['dataset']).version
    return exported


def _open_registry(path: Optional[str]):
    from .registry import Registry
    return Registry(path or DEFAULT_REGISTRY)


def register_export(reg, exported: dict, ckpt: dict, metrics: Optional[dict], dataset: str):
    """Record an exported model: sha256 of the file (what the node checks), metrics overall and
    per class, its files, the run and dataset manifest it came from, the training config."""
    from .dataset import manifest_sha256
    from .deploy import file_sha256
    from .registry import RegistryError

    onnx_path = Path(exported['model']).resolve()
    sha = file_sha256(onnx_path)
    version = exported['model_version']
    known = {m.version: m for m in reg.list_models()}
    if version in known:
        if known[version].sha256 == sha:
            print(f'model {version} is already registered in {reg.path}')
            return known[version]
        raise RegistryError(f'model version {version!r} is already registered in {reg.path} with another '
                            f'file; export with --model-version NEW_VERSION')
    artifacts = [str(onnx_path), str(onnx_path.with_suffix('.export.json'))]
    if 'int8' in exported:
        artifacts.append(str(Path(exported['int8']['model']).resolve()))
    record = {k: v for k, v in (metrics or {}).items()
              if k in ('accuracy', 'balanced_accuracy', 'macro_f1', 'roc_auc_macro', 'samples', 'split',
                       'per_class')}
    record[f'best_val_{ckpt["monitor"]}'] = ckpt['best_metric']
    run_id = ckpt.get('run_id')
    if run_id and run_id not in {r.run_id for r in reg.list_runs()}:
        run_id = None  # trained with another registry (or none)
    model = reg.register_model(version, onnx_path, sha, ckpt['class_names'], record, run_id=run_id,
                               artifacts=artifacts, config=ckpt['config'],
                               dataset_sha256=ckpt.get('dataset_sha256') or manifest_sha256(dataset))
    print(f'registered model {version} (sha256 {sha[:12]}) in {reg.path}')
    return model


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
    summary = train_mod.main(cfg, registry=cfg['registry'] or None)
    if summary['interrupted']:
        raise KeyboardInterrupt
    if summary['cancelled']:
        print(f'[pipeline] training was cancelled; not evaluating or exporting '
              f'(resume with --set train.resume={summary["last_checkpoint"]})')
        return {'train': summary}
    best = summary['best_checkpoint']
    print('[pipeline] 3/4 evaluate')
    metrics = cmd_evaluate(best, str(dataset), cfg['evaluate']['split'], None)
    print('[pipeline] 4/4 export')
    exported = cmd_export(best, dataset=str(dataset), metrics=metrics, quantize=quantize,
                          registry=cfg['registry'], use_registry=bool(cfg['registry']))
    result = {'train': summary, 'test_metrics': {k: metrics[k] for k in
                                                 ('accuracy', 'balanced_accuracy', 'macro_f1', 'roc_auc_macro')},
              'export': {k: exported[k] for k in ('model', 'model_version', 'parity')}}
    if summary.get('run_id'):
        result['run_id'] = summary['run_id']
    if 'int8' in exported:
        result['export']['int8'] = exported['int8']
    (Path(cfg['output_dir']) / 'pipeline.json').write_text(json.dumps(result, indent=1))
    print(f'[pipeline] done: {exported["model"]} (test macro-F1 {metrics["macro_f1"]:.4f})')
    return result


def _when(t: Optional[float]) -> str:
    return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t)) if t else '-'


def _num(v) -> str:
    if isinstance(v, float):
        return f'{v:.4f}'
    return '-' if v is None else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = '  '.join(f'{{:<{w}}}' for w in widths)
    return '\n'.join(fmt.format(*map(str, r)).rstrip() for r in (header, *rows))


def cmd_models(args: argparse.Namespace) -> int:
    reg = _open_registry(args.registry)
    action = args.models_command
    if action == 'list':
        models = reg.list_models()
        if not models:
            print(f'no models registered in {reg.path}')
            return 0
        rows = [(m.version, m.metrics.get('kind', 'classifier'), m.status, _when(m.created_at),
                 _num(m.metrics.get('macro_f1')), _num(m.metrics.get('accuracy')),
                 _num(m.metrics.get('false_alarm_inspect')), m.sha256[:12], _deployed(m), m.run_id or '-')
                for m in models]
        print(_table(('version', 'kind', 'status', 'created', 'macro_f1', 'accuracy', 'false_alarm_inspect',
                      'sha256', 'deployed_to', 'run'), rows))
    elif action == 'show':
        m = reg.resolve_model(args.model)
        print(f'model {m.version} ({m.status})')
        for key, value in (('created', _when(m.created_at)), ('onnx', m.onnx_path), ('sha256', m.sha256),
                           ('classes', ', '.join(m.class_names)), ('run', m.run_id or '-'),
                           ('dataset manifest sha256', m.dataset_sha256 or '-'),
                           ('deployed', f'{m.deployed_to} at {_when(m.deployed_at)}' if m.deployed_to else '-'),
                           ('pending deploy', f'{m.pending_to} (no answer yet; `weld-train models reconcile`)'
                            if m.pending_to else '-')):
            print(f'  {key}: {value}')
        scalars = {k: v for k, v in m.metrics.items() if not isinstance(v, dict)}
        print('  metrics: ' + (', '.join(f'{k} {_num(v)}' for k, v in scalars.items()) or '-'))
        per_class = m.metrics.get('per_class', {})
        if per_class:
            rows = [(c, _num(pc.get('precision')), _num(pc.get('recall')), _num(pc.get('f1')),
                     _num(pc.get('support'))) for c, pc in per_class.items()]
            print('\n'.join('    ' + line for line in
                            _table(('class', 'precision', 'recall', 'f1', 'support'), rows).split('\n')))
        if m.config:
            mc, tc = m.config.get('model', {}), m.config.get('train', {})
            print(f'  config: model {mc.get("name")} {mc.get("channels")} {mc.get("input_size")} px, '
                  f'{tc.get("epochs")} epochs, batch {tc.get("batch_size")}, lr {tc.get("lr")}, '
                  f'loss {tc.get("loss")}, seed {m.config.get("seed")}')
        print('  files: ' + ', '.join(m.artifacts or (m.onnx_path,)))
        print('  events:')
        for e in reg.events(m.version):
            print(f'    {_when(e["at"])}  {e["kind"]}' + (f'  {e["detail"]}' if e['detail'] else ''))
    elif action == 'compare':
        if len(args.models) < 2:
            raise ConfigError('models compare needs at least two versions')
        print(reg.compare([reg.resolve_model(v).version for v in args.models]))
    elif action == 'promote':
        m = reg.promote(reg.resolve_model(args.model).version)
        print(f'model {m.version} is now the active model')
    elif action == 'reconcile':
        from .deploy import reconcile
        served, model = reconcile(reg, args.node, args.timeout)
        node = args.node if args.node.startswith('/') else '/' + args.node
        if model is not None:
            print(f'{node} serves {model.version} ({served.model_path}); recorded in {reg.path}')
        elif served.model_path:
            print(f'{node} serves {served.model_path} (sha256 {served.model_sha256[:12] or "not given"}), '
                  f'which is not registered in {reg.path}; recorded that no registered model is served there')
        else:
            print(f'{node} serves no model; recorded in {reg.path}')
    elif action == 'delete':
        version = reg.resolve_model(args.model).version
        removed = reg.delete_model(version, delete_files=not args.keep_files)
        print(f'deleted model {version}' + (f'; removed {", ".join(removed)}' if removed else ''))
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from .deploy import deploy, resolve_target

    reg = _open_registry(args.registry)
    model = resolve_target(reg, args.model)
    if args.golden:
        from .golden import GoldenGateError, golden_gate
        serving = args.serving
        if not serving:
            record = _serving_model(reg, args.node, model.version)
            if record is None:
                raise GoldenGateError(f'no serving model of {args.node} is recorded in the registry: '
                                      'give --serving FILE')
            serving = record.onnx_path
        print(f'golden-set gate: {model.version} against the serving {serving} ...', flush=True)
        gate = golden_gate(model.onnx_path, serving, args.golden, args.golden_margin, args.golden_min_frames)
        print(gate.describe())
        if not gate.passed:
            print(f'deploy of {model.version} refused by the golden-set gate; {args.node} keeps its model')
            return 1
    print(f'deploying {model.version} ({model.onnx_path}) to {args.node} ...', flush=True)
    if args.remote and args.models_dir:
        raise ConfigError('--remote sends the model to the node, which writes it into its own models_dir: '
                          'drop --models-dir')
    result = deploy(model.version, reg, node=args.node, timeout_s=args.timeout,
                    models_dir=Path(args.models_dir) if args.models_dir else None, remote=args.remote)
    if result.state == 'pending':
        print(f'{result.node} has not answered for {result.version}: {result.reason}; recorded as pending in '
              f'{reg.path}: settle it with `weld-train models reconcile --node {result.node}`')
        return 3
    if result.accepted:
        late = '' if result.answered else f' ({result.reason})'
        print(f'{result.node} accepted {result.version}: now serving {result.model_path}{late}')
        return 0
    print(f'{result.node} refused {result.version}: {result.reason}')
    return 1


def _deployed(m) -> str:
    where = m.deployed_to or '-'
    return f'{where}, pending {m.pending_to}' if m.pending_to else where


def _alive(pid: Optional[int]) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def format_run(run) -> str:
    """A run's progress as `weld-train status` prints it."""
    m = run.metrics
    state = run.status
    if run.status == 'running':
        state += f', pid {run.pid}' + ('' if _alive(run.pid) else ' (not alive on this host)')
        if run.cancel_requested:
            state += ', cancel requested'
    lines = [f'run {run.run_id}: {state}',
             f'  started {_when(run.created_at)}, updated {_when(run.updated_at)} '
             f'({time.time() - run.updated_at:.0f} s ago)',
             f'  epoch {run.epoch}/{run.total_epochs}'
             + (f', ETA {run.eta_s / 60.0:.1f} min' if run.eta_s is not None else '')]
    keys = ('train_loss', 'val_loss', 'val_accuracy', 'val_macro_f1', 'val_balanced_accuracy', 'images_per_s')
    shown = [f'{k} {_num(m[k])}' for k in keys if k in m]
    if shown:
        lines.append('  ' + ', '.join(shown))
    if 'best_metric' in m:
        lines.append(f'  best val {m.get("monitor", "metric")} {_num(m["best_metric"])} at epoch {m.get("best_epoch")}')
    if m.get('per_class_f1'):
        lines.append('  val F1 per class: ' + ', '.join(f'{c} {v:.3f}' for c, v in m['per_class_f1'].items()))
    lines.append(f'  run folder {run.run_dir}')
    return '\n'.join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    reg = _open_registry(args.registry)
    if args.all:
        runs = reg.list_runs()
        if not runs:
            print(f'no runs recorded in {reg.path}')
            return 0
        rows = [(r.run_id, r.status, f'{r.epoch}/{r.total_epochs}', _num(r.metrics.get('val_macro_f1')),
                 f'{r.eta_s / 60.0:.1f} min' if r.eta_s is not None else '-', _when(r.updated_at), r.run_dir)
                for r in runs]
        print(_table(('run', 'status', 'epoch', 'val_macro_f1', 'ETA', 'updated', 'folder'), rows))
        return 0
    print(format_run(reg.resolve_run(args.run)))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    reg = _open_registry(args.registry)
    run = reg.resolve_run(args.run)
    reg.request_cancel(run.run_id)
    print(f'cancel requested for {run.run_id}: it stops after its current step, saves last.pt and ends '
          f'as cancelled (follow with `weld-train status {run.run_id}`)')
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .augment import AugmentError
    from .bags import BagError
    from .dataset import DatasetError
    from .deploy import DeployError
    from .registry import RegistryError
    from .export import ExportError
    from .losses import LossError
    from .models import ModelError
    from .splits import SplitError
    from weld_vision_ros.core.classes import UnknownClassError
    from weld_vision_ros.core.preprocess import PreprocessError

    expected = (ConfigError, BagError, DatasetError, SplitError, ModelError, LossError, AugmentError,
                ExportError, UnknownClassError, PreprocessError, OSError, RegistryError,
                DeployError)  # OSError's message names the file (missing, unreadable, a folder)
    from .golden import GoldenGateError
    from .review import ReviewError
    from .anomaly import AnomalyFitError
    expected = expected + (GoldenGateError, ReviewError, AnomalyFitError)
    registry_commands = {'models': cmd_models, 'deploy': cmd_deploy, 'status': cmd_status,
                         'cancel': cmd_cancel, 'gate': cmd_gate, 'review': cmd_review,
                         'anomaly': cmd_anomaly}
    try:
        if args.command in registry_commands:
            return registry_commands[args.command](args)
        if args.command == 'evaluate':
            cmd_evaluate(args.checkpoint, args.dataset, args.split, args.out)
        elif args.command == 'export':
            cmd_export(args.checkpoint, dataset=args.dataset, out=args.out, opset=args.opset,
                       version=args.model_version, metrics_json=args.metrics,
                       quantize=True if args.quantize else None, parity_samples=args.parity_samples,
                       tolerance=args.tolerance, registry=args.registry, use_registry=not args.no_registry)
        else:
            cfg = load_config(args.config, args.overrides, [_updates(args)])
            if args.command == 'extract':
                cmd_extract(cfg, args.overwrite)
            elif args.command == 'train':
                from .train import main as train_main
                summary = train_main(cfg, registry=cfg['registry'] or None)
                if summary['interrupted']:
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

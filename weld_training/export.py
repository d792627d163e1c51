"""ONNX export with the weld.* metadata contract, a parity check, and optional int8.

The exported graph has one input 'image' (N, C, H, W) float32 and one output 'logits'
(N, num_classes), with a dynamic batch axis, at opset >= 17. Its metadata carries the
ModelContract the ONNX node reads (class names, preprocessing preset, names, version,
metrics, sha256 of the weights). The parity check runs real dataset frames, preprocessed
by the shared `preprocess`, through PyTorch and onnxruntime and fails above a tolerance.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from weld_vision_ros.core.model_contract import ModelContract

from .dataset import WeldFrames
from .evaluate import classification_metrics, predict_onnx, softmax
from .checkpoints import load_checkpoint_model

INPUT_NAME = 'image'
OUTPUT_NAME = 'logits'
MIN_OPSET = 17


class ExportError(RuntimeError):
    """An export that cannot be produced or that does not behave like the PyTorch model."""


class ParityError(ExportError):
    """onnxruntime and PyTorch disagree on real samples by more than the tolerance."""


def weights_sha256(model_proto) -> str:
    """sha256 over the graph's initializers (name and raw little-endian values, by name)."""
    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in sorted(model_proto.graph.initializer, key=lambda t: t.name):
        values = np.ascontiguousarray(numpy_helper.to_array(init))
        h.update(init.name.encode())
        h.update(values.astype(values.dtype.newbyteorder('<'), copy=False).tobytes())
    return h.hexdigest()


def write_contract(model_proto, contract: ModelContract) -> None:
    """Replace the model's weld.* metadata with `contract`."""
    meta = contract.to_metadata()
    keep = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in meta]
    del model_proto.metadata_props[:]
    for key, value in keep + sorted(meta.items()):
        prop = model_proto.metadata_props.add()
        prop.key, prop.value = key, value


def read_contract(path: str | Path) -> ModelContract:
    """The contract of an exported model, read as the ONNX node reads it."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return ModelContract.from_metadata(sess.get_modelmeta().custom_metadata_map)


def _torch_export(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int) -> str:
    """Export with the TorchScript-based exporter, else the dynamo one; return which worked."""
    import warnings

    errors = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}},
                              do_constant_folding=True)
        return 'torchscript'
    except Exception as exc:  # noqa: BLE001 - fall back to the other exporter, report both
        errors.append(f'torchscript exporter: {exc}')
    try:
        batch = torch.export.Dim('batch', min=1, max=1024)
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset, dynamo=True,
                          dynamic_shapes=({0: batch},), external_data=False)
        return 'dynamo'
    except Exception as exc:  # noqa: BLE001
        errors.append(f'dynamo exporter: {exc}')
    raise ExportError('ONNX export failed with both exporters:\n' + '\n'.join(errors))


def _samples(dataset_dir: Path, preset, class_names, n: int, splits: Sequence[str]) -> WeldFrames:
    for split in splits:
        ds = WeldFrames(dataset_dir, split, preset, class_names=class_names)
        if len(ds):
            ds.frames, ds.labels = ds.frames[:n], ds.labels[:n]
            return ds
    raise ExportError(f'{dataset_dir} has no frames in {", ".join(splits)} for the parity check')


def parity_check(model: torch.nn.Module, onnx_path: Path, dataset: WeldFrames, tolerance: float) -> dict:
    """Max abs logit difference PyTorch vs onnxruntime on real frames, batched and one by one."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    x = np.stack([np.asarray(dataset[i][0]) for i in range(len(dataset))]).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    batched = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    single = np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + 1]})[0] for i in range(len(x))])
    diff = float(max(np.abs(batched - ref).max(), np.abs(single - ref).max()))
    result = {'samples': int(len(x)), 'max_abs_diff': diff, 'tolerance': tolerance,
              'argmax_agree': float((batched.argmax(1) == ref.argmax(1)).mean()),
              'passed': diff <= tolerance}
    if not result['passed']:
        raise ParityError(f'onnxruntime and PyTorch differ by {diff:.3g} on {len(x)} real frames '
                          f'(tolerance {tolerance:.1g})')
    return result


class _Calibration:
    """onnxruntime CalibrationDataReader over preprocessed training frames."""

    def __init__(self, dataset: WeldFrames, n: int) -> None:
        self._items = iter([np.asarray(dataset[i][0])[None].astype(np.float32)
                            for i in range(min(n, len(dataset)))])

    def get_next(self):
        x = next(self._items, None)
        return None if x is None else {INPUT_NAME: x}


def quantize_int8(fp32_path: Path, out_path: Path, calibration: WeldFrames, n: int) -> None:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on training frames."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):
        pass

    prepped = out_path.with_suffix('.prep.onnx')
    quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
    try:
        quantize_static(str(prepped), str(out_path), Reader(calibration, n), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepped.unlink(missing_ok=True)


def _onnx_metrics(path: Path, dataset: WeldFrames) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    y, logits = predict_onnx(sess, dataset, INPUT_NAME)
    return classification_metrics(y, softmax(logits.astype(np.float64)), dataset.class_names)


def export_model(checkpoint: str | Path, out_path: str | Path, dataset_dir: str | Path, *,
                 opset: int = MIN_OPSET, version: Optional[str] = None, metrics: Optional[dict] = None,
                 parity_samples: int = 16, parity_tolerance: float = 1e-4, quantize: bool = False,
                 calibration_samples: int = 64, eval_split: str = 'test', calibrate: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Export a checkpoint to ONNX with its contract, check parity, optionally quantize.

    metrics: evaluation metrics to record in weld.metrics (e.g. from `weld-train evaluate`).
    calibrate: fit the temperature on the dataset's val split (weld.temperature).
    Returns a summary, also written beside the model as <model>.export.json.
    """
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f'opset must be >= {MIN_OPSET}, got {opset}')
    if parity_samples < 1:
        raise ExportError(f'parity_samples must be >= 1, got {parity_samples}')
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    dataset_dir = Path(dataset_dir)
    model, ckpt = load_checkpoint_model(checkpoint)
    preset, class_names = ckpt['preset_obj'], list(ckpt['class_names'])
    parity_set = _samples(dataset_dir, preset, class_names, parity_samples, ('test', 'val', 'train'))

    t0 = time.perf_counter()
    example = torch.stack([parity_set[i][0] for i in range(min(2, len(parity_set)))])
    exporter = _torch_export(model, example, out_path, opset)
    proto = onnx.load(str(out_path))
    onnx.checker.check_model(proto)
    sha = weights_sha256(proto)
    name = ckpt['config']['model']['name']
    version = version or f'{name}-{preset.channels}-{sha[:12]}'
    record = {k: v for k, v in (metrics or {}).items()
              if k in ('accuracy', 'balanced_accuracy', 'macro_f1', 'roc_auc_macro', 'samples', 'split')}
    contract = ModelContract(class_names=tuple(class_names), preprocess=preset, input_name=INPUT_NAME,
                             output_name=OUTPUT_NAME, output_kind='logits', model_version=version,
                             metrics=record, weights_sha256=sha)
    write_contract(proto, contract)
    onnx.save(proto, str(out_path))
    _check_graph(out_path, preset.num_channels, opset)
    log(f'exported {out_path} ({exporter} exporter, opset {opset}) in {time.perf_counter() - t0:.1f} s')

    try:
        parity = parity_check(model, out_path, parity_set, parity_tolerance)
    except ParityError:
        failed = out_path.with_suffix('.parity_failed.onnx')
        out_path.replace(failed)
        log(f'parity check failed; model moved to {failed}')
        raise
    log(f'parity on {parity["samples"]} real frames: max abs diff {parity["max_abs_diff"]:.3g} '
        f'(tolerance {parity_tolerance:g})')
    calibration = None
    if calibrate:
        calibration = calibrate_temperature(out_path, dataset_dir, preset, class_names)
        if calibration is None:
            log('no validation frames: the model is not calibrated (weld.temperature 1)')
        else:
            contract = dataclasses.replace(contract, temperature=calibration['temperature'])
            write_contract(proto, contract)
            onnx.save(proto, str(out_path))
            log(f'temperature {calibration["temperature"]:.3f} fitted on {calibration["samples"]} val frames: '
                f'ECE {calibration["ece_before"]:.4f} -> {calibration["ece_after"]:.4f}')
    summary = {'model': str(out_path), 'checkpoint': str(checkpoint), 'exporter': exporter, 'opset': opset,
               'model_version': version, 'weights_sha256': sha, 'parity': parity,
               'calibration': calibration, 'contract': contract.to_metadata()}

    if quantize:
        summary['int8'] = _quantize_and_compare(out_path, dataset_dir, preset, class_names, contract,
                                                calibration_samples, eval_split, log)
    out_path.with_suffix('.export.json').write_text(json.dumps(summary, indent=1))
    return summary


def calibrate_temperature(onnx_path: Path, dataset_dir: Path, preset, class_names) -> Optional[dict]:
    """Temperature scaling fitted on the val split, run through the exported graph; None without
    val frames. Returns the temperature and the val NLL and ECE before and after."""
    import onnxruntime as ort

    from .calibration import expected_calibration_error, fit_temperature, nll

    val = WeldFrames(dataset_dir, 'val', preset, class_names=class_names)
    if len(val) == 0:
        return None
    sess = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    y, logits = predict_onnx(sess, val, INPUT_NAME)
    logits = logits.astype(np.float64)
    t = fit_temperature(logits, y)
    return {'temperature': t, 'split': 'val', 'samples': int(y.size),
            'nll_before': nll(logits, y), 'nll_after': nll(logits, y, t),
            'ece_before': expected_calibration_error(y, softmax(logits)),
            'ece_after': expected_calibration_error(y, softmax(logits / t))}


def _check_graph(path: Path, channels: int, opset: int) -> None:
    import onnx

    proto = onnx.load(str(path))
    got_opset = max(o.version for o in proto.opset_import if o.domain in ('', 'ai.onnx'))
    if got_opset < opset:
        raise ExportError(f'exported opset {got_opset} < requested {opset}')
    inputs = [i for i in proto.graph.input if i.name == INPUT_NAME]
    if not inputs or [o.name for o in proto.graph.output] != [OUTPUT_NAME]:
        raise ExportError(f'exported graph must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}')
    dims = inputs[0].type.tensor_type.shape.dim
    if dims[0].dim_param == '' or dims[1].dim_value != channels:
        raise ExportError(f'input {INPUT_NAME!r} must be (batch, {channels}, H, W) with a dynamic batch')


def _quantize_and_compare(fp32_path: Path, dataset_dir: Path, preset, class_names, contract: ModelContract,
                          n_calib: int, eval_split: str, log) -> dict:
    import onnx

    int8_path = fp32_path.with_name(fp32_path.stem + '.int8.onnx')
    calib = WeldFrames(dataset_dir, 'train', preset, class_names=class_names)
    t0 = time.perf_counter()
    quantize_int8(fp32_path, int8_path, calib, n_calib)
    eval_set = WeldFrames(dataset_dir, eval_split, preset, class_names=class_names)
    if len(eval_set) == 0:
        eval_set = WeldFrames(dataset_dir, 'val', preset, class_names=class_names)
    fp32 = _onnx_metrics(fp32_path, eval_set)
    int8 = _onnx_metrics(int8_path, eval_set)
    proto = onnx.load(str(int8_path))
    sha = weights_sha256(proto)
    record = {k: int8[k] for k in ('accuracy', 'balanced_accuracy', 'macro_f1', 'roc_auc_macro', 'samples')}
    record['split'] = eval_set.split
    write_contract(proto, dataclasses.replace(contract, model_version=contract.model_version + '-int8',
                                              metrics=record, weights_sha256=sha))
    onnx.save(proto, str(int8_path))
    result = {'model': str(int8_path), 'split': eval_set.split, 'samples': len(eval_set),
              'fp32_accuracy': fp32['accuracy'], 'int8_accuracy': int8['accuracy'],
              'accuracy_change': int8['accuracy'] - fp32['accuracy'],
              'fp32_macro_f1': fp32['macro_f1'], 'int8_macro_f1': int8['macro_f1'],
              'macro_f1_change': int8['macro_f1'] - fp32['macro_f1'],
              'size_bytes': {'fp32': fp32_path.stat().st_size, 'int8': int8_path.stat().st_size},
              'seconds': time.perf_counter() - t0}
    log(f'int8 model {int8_path}: accuracy {fp32["accuracy"]:.4f} -> {int8["accuracy"]:.4f} '
        f'({result["accuracy_change"]:+.4f}), macro-F1 {fp32["macro_f1"]:.4f} -> {int8["macro_f1"]:.4f} '
        f'on {len(eval_set)} {eval_set.split} frames')
    return result

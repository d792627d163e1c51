"""Receiving a model file from another host into a node's models directory, without ROS.

The ONNX defect node's `~/upload_model` service (srv/UploadModel.srv) hands the bytes to
`store_uploaded_model`, which refuses, in this order and before anything is written:
a file name that is not a plain `<name>.onnx` (no folders, nothing hidden), more bytes than
max_model_mb allows, bytes whose sha256 differs from the one sent, a name already taken in
models_dir by another file. It then writes the bytes to a hidden temporary file in
models_dir (same filesystem, so the rename below is atomic), has the caller validate that
file as it validates any model, and only then renames it to its name: the node never sees
a half-written model, and a refused one leaves models_dir as it was.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from .onnx_classifier import ModelValidationError, normalize_sha256, sha256_hex

_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}\.onnx$')


def check_upload_name(file_name: str) -> str:
    """`file_name` if it is a plain model file name (`weld-v4.onnx`), else ModelValidationError."""
    if not _NAME.match(file_name or '') or '..' in file_name:
        raise ModelValidationError(
            f'file_name {file_name!r} must be a plain file name ending in .onnx (letters, digits, '
            f'._+-; no folders, not hidden), e.g. weld-v4.onnx')
    return file_name


def store_uploaded_model(models_dir: str | Path, file_name: str, data: bytes, sha256: str, *,
                         max_file_mb: float, validate: Callable[[Path, str], None]) -> Path:
    """Write an uploaded model into `models_dir` atomically, once `validate(path, sha256)` (which
    raises ModelValidationError to refuse) accepted it; return its final path.

    max_file_mb: largest upload accepted [MB], checked before hashing. A file of the same name
    and content already there is returned as it is (an upload repeated after a lost answer).
    """
    name = check_upload_name(file_name)
    if len(data) > max_file_mb * 1e6:
        raise ModelValidationError(f'upload {name!r} is {len(data) / 1e6:.1f} MB, more than max_model_mb '
                                   f'{max_file_mb:g} MB')
    try:
        expected = normalize_sha256(sha256)
    except ValueError as exc:
        raise ModelValidationError(f'sha256: {exc}') from None
    if not expected:
        raise ModelValidationError('an upload must carry the sha256 of its bytes')
    digest = sha256_hex(data)
    if digest != expected:
        raise ModelValidationError(f'the {len(data)} bytes received for {name!r} have sha256 {digest}, not '
                                   f'{expected}: damaged in transit, or not the approved file')
    root = Path(models_dir) if models_dir else None
    if root is None or not root.is_dir():
        raise ModelValidationError(f'models_dir {str(models_dir)!r} is not a directory: set it on the node')
    target = root / name
    if target.exists():
        if target.is_file() and sha256_hex(target.read_bytes()) == digest:
            return target
        raise ModelValidationError(f'{str(target)!r} already holds another file: upload under a new name '
                                   f'(a file in models_dir is never replaced)')
    tmp = root / f'.{name}.upload-{os.getpid()}'
    try:
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        validate(tmp, digest)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(root)
    return target


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (a power cut after the answer keeps the file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""core.model_upload: an uploaded model reaches models_dir only whole and validated."""
import hashlib
import os

import pytest

from weld_vision_ros.core.model_upload import check_upload_name, store_uploaded_model
from weld_vision_ros.core.onnx_classifier import ModelValidationError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _accept(path, digest):
    assert path.read_bytes() and _sha(path.read_bytes()) == digest  # the whole file is there when validated


def _refuse(path, digest):
    raise ModelValidationError('not a model')


@pytest.mark.parametrize('name', ['../x.onnx', 'a/b.onnx', '.hidden.onnx', 'x.txt', '', 'x..onnx', '/abs.onnx'])
def test_names_other_than_a_plain_onnx_file_are_refused(name):
    with pytest.raises(ModelValidationError, match='plain file name'):
        check_upload_name(name)


def test_a_valid_upload_is_written_whole_and_nothing_else_is_left(tmp_path):
    data = os.urandom(3000)
    path = store_uploaded_model(tmp_path, 'weld-v4.onnx', data, _sha(data), max_file_mb=1, validate=_accept)
    assert path == tmp_path / 'weld-v4.onnx' and path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ['weld-v4.onnx']
    # Repeated (an answer lost in transit): the same file is fine.
    assert store_uploaded_model(tmp_path, 'weld-v4.onnx', data, _sha(data), max_file_mb=1, validate=_accept) == path


def test_refusals_leave_models_dir_as_it_was(tmp_path):
    good = os.urandom(3000)
    (tmp_path / 'serving.onnx').write_bytes(good)
    other = os.urandom(3000)
    cases = [
        (dict(file_name='new.onnx', data=other, sha256=_sha(good)), 'damaged in transit'),
        (dict(file_name='new.onnx', data=other, sha256=''), 'must carry the sha256'),
        (dict(file_name='serving.onnx', data=other, sha256=_sha(other)), 'already holds another file'),
        (dict(file_name='new.onnx', data=b'x' * 2_000_001, sha256=_sha(b'x' * 2_000_001)), 'more than max_model_mb'),
    ]
    for kwargs, reason in cases:
        with pytest.raises(ModelValidationError, match=reason):
            store_uploaded_model(tmp_path, max_file_mb=2, validate=_accept, **kwargs)
    with pytest.raises(ModelValidationError, match='not a model'):
        store_uploaded_model(tmp_path, 'new.onnx', other, _sha(other), max_file_mb=2, validate=_refuse)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['serving.onnx']
    assert (tmp_path / 'serving.onnx').read_bytes() == good
    with pytest.raises(ModelValidationError, match='is not a directory'):
        store_uploaded_model(tmp_path / 'nope', 'new.onnx', other, _sha(other), max_file_mb=2, validate=_accept)

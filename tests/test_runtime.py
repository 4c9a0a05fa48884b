import numpy as np
import pytest
from tiny_workspace import make_lsh_run

import onnx
from onnx import TensorProto, helper
from tbhcli.deploy import runtime as infer
from tbhcli.deploy.export import export
from tbhcli.deploy.runtime import create_session, model_info, run_codes
from tbhcli.errors import TbhError
from tbhcli.workspace import file_sha256


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("m")
    return export(make_lsh_run(tmp / "run", bits=8), out=tmp / "m.onnx", input="features")


def test_cpu_session_runs_and_says_so(model):
    session, provider = create_session(model, device="cpu")
    assert provider == "CPUExecutionProvider"
    codes = run_codes(session, np.zeros((3, 32), np.float32))
    assert codes.shape == (3, 1) and codes.dtype == np.uint8


def test_auto_without_gpu_is_cpu(model, monkeypatch):
    monkeypatch.setattr(infer, "gpu_count", lambda: 0)
    assert create_session(model)[1] == "CPUExecutionProvider"


def test_cuda_without_gpu_is_an_error(model, monkeypatch):
    monkeypatch.setattr(infer, "gpu_count", lambda: 0)
    with pytest.raises(TbhError, match="no CUDA GPU"):
        create_session(model, device="cuda")
    with pytest.raises(TbhError, match="--device"):
        create_session(model, device="tpu")


def test_no_silent_fallback_to_cpu(model, monkeypatch):
    """A GPU is present but the CUDA provider does not come up: an error, not a CPU run."""
    import onnxruntime as ort

    class CpuOnly:
        def __init__(self, path, sess_options=None, providers=None):
            assert providers[0] == "CUDAExecutionProvider"

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(infer, "gpu_count", lambda: 1)
    monkeypatch.setattr(ort, "InferenceSession", CpuOnly)
    monkeypatch.setattr(ort, "preload_dlls", lambda: None)
    with pytest.raises(TbhError, match="could not start its CUDA provider"):
        create_session(model, device="auto")


def test_model_info_and_hash(model):
    info = model_info(model)
    assert (info.bits, info.input, info.feature_dim, info.input_shape) == (8, "features", 32, (32,))
    assert info.sha256 == file_sha256(model) and len(info.sha256) == 64


def test_model_info_rejects_foreign_files(tmp_path):
    with pytest.raises(TbhError, match="not found"):
        model_info(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffnot protobuf at all" * 10)
    with pytest.raises(TbhError, match="cannot read"):
        model_info(tmp_path / "junk.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    with pytest.raises(TbhError, match="no tbh metadata"):
        model_info(tmp_path / "plain.onnx")
    partial = helper.make_model(graph)
    helper.set_model_props(partial, {"tbh.bits": "8"})
    onnx.save(partial, str(tmp_path / "partial.onnx"))
    with pytest.raises(TbhError, match="incomplete tbh metadata"):
        model_info(tmp_path / "partial.onnx")

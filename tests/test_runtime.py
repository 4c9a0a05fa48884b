import numpy as np
import pytest

import onnx
from onnx import TensorProto, helper
from tbhcli import device
from tbhcli.deploy.export import export
from tbhcli.deploy.runtime import create_session, model_info, run_codes
from tbhcli.errors import TbhError
from tbhcli.workspace import file_sha256
from tests.tiny_workspace import make_lsh_run


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
    monkeypatch.setattr(device, "gpu_count", lambda: 0)
    assert create_session(model)[1] == "CPUExecutionProvider"


def test_cuda_without_gpu_is_an_error(model, monkeypatch):
    monkeypatch.setattr(device, "gpu_count", lambda: 0)
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

    monkeypatch.setattr(device, "gpu_count", lambda: 1)
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


def _edited(model, out, **changes) -> str:
    """A copy of `model` with some `tbh.*` metadata values replaced (key without the prefix)."""
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        key = prop.key.removeprefix("tbh.")
        if key in changes:
            prop.value = str(changes[key])
    onnx.save(proto, str(out))
    return out


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("im")
    return export(make_lsh_run(tmp / "run", bits=32), out=tmp / "m.onnx")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"bits": 12}, "tbh.bits is 12, not a positive multiple of 8"),
        ({"bits": -8}, "tbh.bits is -8, not a positive multiple of 8"),
        ({"bits": 0}, "tbh.bits is 0"),
        ({"bits": "abc"}, "incomplete tbh metadata"),
        ({"image_size": 0}, "tbh.image_size is 0"),
        ({"image_size": -32}, "tbh.image_size is -32"),
        ({"image_size": 64}, "the graph takes \\['B', 3, 32, 32\\]"),
        ({"feature_dim": 0}, "tbh.feature_dim is 0"),
        ({"input": "features"}, "the graph takes"),
        ({"input": "pixels"}, "tbh.input is 'pixels'"),
    ],
)
def test_metadata_that_contradicts_the_model_is_refused(image_model, tmp_path, changes, message):
    bad = _edited(image_model, tmp_path / "bad.onnx", **changes)
    with pytest.raises(TbhError, match=message):
        model_info(bad)


@pytest.mark.parametrize("bits", [16, 8, 64, 40])
def test_bits_are_checked_against_the_codes_the_model_outputs(image_model, tmp_path, bits):
    bad = _edited(image_model, tmp_path / "bad.onnx", bits=bits)
    info = model_info(bad)  # the graph's code width is symbolic: only running it tells
    assert info.bits == bits
    with pytest.raises(
        TbhError, match=f"tbh.bits is {bits} .* outputs uint8 codes of shape \\[4\\]"
    ):
        create_session(bad, device="cpu", info=info)
    create_session(image_model, device="cpu", info=model_info(image_model))  # the true model


def test_index_with_edited_bits_is_one_line_and_writes_no_store(image_model, tmp_path):
    from typer.testing import CliRunner

    from tbhcli.cli import app
    from tests.tiny_workspace import make_images

    make_images(tmp_path / "images", {"a": 2})
    bad = _edited(image_model, tmp_path / "bad.onnx", bits=16)
    store = tmp_path / "c.zarr"
    args = ["index", str(tmp_path / "images"), "--store", str(store), "--model", str(bad)]
    result = CliRunner().invoke(app, [*args, "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert "tbh.bits is 16" in result.output and "export the model again" in result.output
    assert not store.exists()

"""One device policy (torch and onnxruntime): auto -> CUDA when usable, else the CPU."""

import pytest

from tbhcli import device
from tbhcli.errors import TbhError


@pytest.mark.parametrize(
    "asked, usable, chosen",
    [("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_policy(asked, usable, chosen):
    assert device.resolve_device(asked, cuda_usable=usable) == chosen


def test_cuda_without_a_gpu_and_unknown_devices_are_user_errors(monkeypatch):
    monkeypatch.setattr(device, "gpu_count", lambda: 0)
    assert device.resolve_device("auto") == "cpu"  # the driver's view by default
    with pytest.raises(TbhError, match="no CUDA GPU"):
        device.resolve_device("cuda")
    with pytest.raises(TbhError, match="choose one of auto, cuda, cpu"):
        device.resolve_device("tpu")


def test_torch_asks_torch(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.torch_device("auto") == torch.device("cpu")
    with pytest.raises(TbhError, match="no CUDA GPU"):
        device.torch_device("cuda")

"""The one device policy of every command: `--device auto|cuda|cpu`.

"auto" is CUDA when a GPU is usable, else the CPU; "cuda" without one is a user error, never a
silent fallback. `tbh features` and `tbh train` (torch) and `tbh index` and `tbh query`
(onnxruntime) all decide here, and the GPU is detected without importing torch.
"""

import ctypes

from tbhcli.errors import TbhError

DEVICES = ("auto", "cuda", "cpu")


def gpu_count() -> int:
    """CUDA devices the driver reports (0 without a driver), without importing torch."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def resolve_device(device: str, cuda_usable: bool | None = None) -> str:
    """ "cuda" or "cpu" for a `--device` value; `cuda_usable` defaults to "the driver sees a GPU".

    Runtimes pass whether they can use CUDA themselves (torch: `torch.cuda.is_available()`).
    """
    if device not in DEVICES:
        raise TbhError(f"unknown --device {device!r}; choose one of {', '.join(DEVICES)}.")
    usable = gpu_count() > 0 if cuda_usable is None else cuda_usable
    if device == "cuda" and not usable:
        raise TbhError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu.")
    return "cuda" if device == "cuda" or (device == "auto" and usable) else "cpu"


def torch_device(device: str):
    """The torch.device for a `--device` value (torch decides whether CUDA is usable)."""
    import torch

    return torch.device(resolve_device(device, torch.cuda.is_available()))

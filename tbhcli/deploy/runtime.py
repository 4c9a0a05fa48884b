"""Running exported models with onnxruntime: provider choice, model metadata, batched inference.

The CUDA provider is used only when a GPU is really there, and a session that asked for CUDA but
came up on CPU is an error, never a silent fallback: callers print which provider ran.
"""

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tbhcli.errors import TbhError
from tbhcli.workspace import file_sha256

DEVICES = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ModelInfo:
    """What an exported model's metadata says (the `tbh.*` metadata_props) plus its file hash."""

    path: Path
    sha256: str
    bits: int
    input: str  # "images" (uint8 [B, 3, S, S]) or "features" (float32 [B, D])
    image_size: int | None
    feature_dim: int
    backbone: str | None
    method: str
    config_sha256: str
    version: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input item's shape: (3, S, S) or (D,)."""
        if self.input == "images":
            return (3, self.image_size, self.image_size)
        return (self.feature_dim,)


def model_info(path: str | Path) -> ModelInfo:
    """Read a tbh ONNX model's metadata; a user error if the file is not one."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise TbhError(f"model file not found: {path}; export one with `tbh export`.")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a file that is not ONNX
        raise TbhError(f"cannot read {path} as an ONNX model: {exc}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "tbh.bits" not in props:
        raise TbhError(f"{path} has no tbh metadata; export the model with `tbh export`.")
    size = props.get("tbh.image_size")
    try:
        return ModelInfo(
            path=path,
            sha256=file_sha256(path),
            bits=int(props["tbh.bits"]),
            input=props["tbh.input"],
            image_size=int(size) if size else None,
            feature_dim=int(props["tbh.feature_dim"]),
            backbone=props.get("tbh.backbone") or None,
            method=props["tbh.method"],
            config_sha256=props["tbh.config_sha256"],
            version=props["tbh.version"],
        )
    except (KeyError, ValueError) as exc:  # a missing key, or a number that is not one
        raise TbhError(
            f"{path} has incomplete tbh metadata ({exc}); export the model again with `tbh export`."
        ) from None


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


def create_session(model_path: str | Path, device: str = "auto"):
    """An onnxruntime session on `device` ("auto", "cuda" or "cpu") and the provider it runs on.

    "auto" means CUDA when a GPU is present, else CPU. Returns (session, provider name).
    """
    import onnxruntime as ort

    if device not in DEVICES:
        raise TbhError(f"unknown --device {device!r}; choose one of {', '.join(DEVICES)}.")
    gpus = gpu_count()
    if device == "cuda" and not gpus:
        raise TbhError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu.")
    want_cuda = device == "cuda" or (device == "auto" and gpus > 0)
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings are noise for users
    # Idle onnxruntime threads would otherwise busy-wait, stealing the cores that decode images.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if want_cuda:
        if CUDA not in ort.get_available_providers():
            raise TbhError(
                "a GPU is present but this onnxruntime has no CUDA provider; "
                "install onnxruntime-gpu or pass --device cpu."
            )
        ort.preload_dlls()  # the CUDA/cuDNN libraries that pip's nvidia-* wheels provide
        providers = [CUDA, CPU]
    else:
        providers = [CPU]
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    provider = session.get_providers()[0]
    if want_cuda and provider != CUDA:
        raise TbhError(
            f"onnxruntime could not start its CUDA provider (it came up on {provider}); "
            "check the CUDA/cuDNN libraries, or pass --device cpu."
        )
    return session, provider


def describe_provider(provider: str) -> str:
    """A short human name: "CUDA (onnxruntime-gpu)" or "CPU"."""
    return "CUDA (onnxruntime-gpu)" if provider == CUDA else "CPU"


def run_codes(session, batch: np.ndarray) -> np.ndarray:
    """Run a session on one batch (uint8 images or float32 features) -> codes uint8 [B, bits/8]."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: batch})[0]

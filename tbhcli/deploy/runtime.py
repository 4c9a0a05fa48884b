"""Running exported models with onnxruntime: provider choice, model metadata, batched inference.

The CUDA provider is used only when a GPU is really there, and a session that asked for CUDA but
came up on CPU is an error, never a silent fallback: callers print which provider ran.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tbhcli.device import resolve_device
from tbhcli.errors import TbhError
from tbhcli.imaging.recipe import BackboneRecipe
from tbhcli.workspace import file_sha256

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
    backbone_props: dict[str, str] = field(default_factory=dict)  # tbh.backbone_* metadata

    @property
    def recipe(self) -> BackboneRecipe | None:
        """How to rebuild the backbone that made the features (None: none recorded)."""
        props = {"tbh.backbone": self.backbone or "", **self.backbone_props}
        return BackboneRecipe.from_onnx(props, self.image_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input item's shape: (3, S, S) or (D,)."""
        if self.input == "images":
            return (3, self.image_size, self.image_size)
        return (self.feature_dim,)


def model_info(path: str | Path) -> ModelInfo:
    """Read a tbh ONNX model's metadata; a user error if the file is not one, or if the metadata
    contradicts the graph (`check_metadata`)."""
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
        info = ModelInfo(
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
            backbone_props={k: v for k, v in props.items() if k.startswith("tbh.backbone_")},
        )
        info.recipe  # noqa: B018 (parses the backbone's mean/std: a bad number fails here)
    except (KeyError, ValueError) as exc:  # a missing key, or a number that is not one
        raise TbhError(
            f"{path} has incomplete tbh metadata ({exc}); export the model again with `tbh export`."
        ) from None
    check_metadata(info, proto.graph)
    return info


def _bad_metadata(info: ModelInfo, what: str) -> TbhError:
    return TbhError(
        f"{info.path} has inconsistent tbh metadata: {what}; the file was edited or damaged, "
        "export the model again with `tbh export`."
    )


def _static_dims(value) -> list[int | None]:
    """The dims of a graph input/output: ints where fixed, None where symbolic (the batch)."""
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def check_metadata(info: ModelInfo, graph) -> None:
    """Refuse metadata that contradicts itself or the graph's declared input and output.

    A code width that disagrees with bits/8 would store truncated codes with exit 0, so the
    graph's output is also run once on a zero item where it is opened (`check_output`).
    """
    import onnx

    if info.bits <= 0 or info.bits % 8:
        raise _bad_metadata(info, f"tbh.bits is {info.bits}, not a positive multiple of 8")
    if info.input not in ("images", "features"):
        raise _bad_metadata(info, f"tbh.input is {info.input!r}, not images or features")
    if info.feature_dim <= 0:
        raise _bad_metadata(info, f"tbh.feature_dim is {info.feature_dim}, not positive")
    if info.input == "images" and (info.image_size is None or info.image_size <= 0):
        raise _bad_metadata(info, f"tbh.image_size is {info.image_size}, not a positive size")
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise _bad_metadata(info, "a tbh model has one input and one output")
    dtype = onnx.TensorProto.UINT8 if info.input == "images" else onnx.TensorProto.FLOAT
    declared = _static_dims(graph.input[0])
    expected = [None, *info.input_shape]
    if graph.input[0].type.tensor_type.elem_type != dtype or declared != expected:
        shape = ["B" if d is None else d for d in declared]
        raise _bad_metadata(
            info, f"the graph takes {shape}, not {info.input} of shape [B, {info.input_shape}]"
        )
    if graph.output[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        raise _bad_metadata(info, "the graph's output is not uint8 packed codes")
    width = _static_dims(graph.output[0])[-1:]
    if width and width[0] is not None and width[0] != info.bits // 8:
        raise _bad_metadata(info, f"tbh.bits is {info.bits} but codes are {width[0]} bytes wide")


def check_output(session, info: ModelInfo) -> None:
    """Run `session` on one zero item: its codes must be uint8 [1, bits / 8] as the metadata says.

    The exported graph's code width is symbolic, so this is the check that catches an edited
    `tbh.bits` before a store records codes of the wrong width.
    """
    dtype = np.uint8 if info.input == "images" else np.float32
    try:
        codes = run_codes(session, np.zeros((1, *info.input_shape), dtype))
    except Exception as exc:  # onnxruntime's errors have no common public base class
        raise _bad_metadata(info, f"the model does not run on one item ({exc})") from None
    if codes.dtype != np.uint8 or codes.shape != (1, info.bits // 8):
        raise _bad_metadata(
            info,
            f"tbh.bits is {info.bits} ({info.bits // 8} bytes per code) but the model outputs "
            f"{codes.dtype} codes of shape {list(codes.shape[1:])}",
        )


def create_session(
    model: str | Path | bytes,
    device: str = "auto",
    info: ModelInfo | None = None,
    threads: int | None = None,
):
    """An onnxruntime session on `device` ("auto", "cuda" or "cpu") and the provider it runs on.

    `model` is an ONNX file or its bytes (what Dask workers receive). "auto" means CUDA when a
    GPU is present, else CPU. With `info` (the model's metadata), the session's code width is
    checked against it (`check_output`). `threads` caps onnxruntime's intra-op threads on CPU
    (default: all cores). Returns (session, provider name).
    """
    import onnxruntime as ort

    want_cuda = resolve_device(device) == "cuda"  # the one policy: tbhcli.device
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings are noise for users
    # Idle onnxruntime threads would otherwise busy-wait, stealing the cores that decode images.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
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
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, sess_options=options, providers=providers)
    provider = session.get_providers()[0]
    if want_cuda and provider != CUDA:
        raise TbhError(
            f"onnxruntime could not start its CUDA provider (it came up on {provider}); "
            "check the CUDA/cuDNN libraries, or pass --device cpu."
        )
    if info is not None:
        check_output(session, info)
    return session, provider


def describe_provider(provider: str) -> str:
    """A short human name: "CUDA (onnxruntime-gpu)" or "CPU"."""
    return "CUDA (onnxruntime-gpu)" if provider == CUDA else "CPU"


def run_codes(session, batch: np.ndarray) -> np.ndarray:
    """Run a session on one batch (uint8 images or float32 features) -> codes uint8 [B, bits/8]."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: batch})[0]

"""A run's text model at query time (onnxruntime): texts -> tokens -> packed codes.

The model is `onnx/NAME.text.onnx` beside the images model `onnx/NAME.onnx` (deploy/text_model.py
writes it); it is used only when its metadata names the same run (`tbh.config_sha256`).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tbhcli.deploy.runtime import ModelInfo, create_session, run_codes
from tbhcli.errors import TbhError
from tbhcli.imaging.text import TEXT_SUFFIX, TOKENIZER, tokenize
from tbhcli.terminal import printable


def text_model_path(images_model: Path) -> Path:
    """`onnx/NAME.onnx` -> `onnx/NAME.text.onnx`."""
    images_model = Path(images_model)
    return images_model.with_name(images_model.name.removesuffix(".onnx") + TEXT_SUFFIX)


@dataclass
class TextModel:
    """An open text model: its file, onnxruntime session and tokens per text."""

    path: Path
    session: Any
    context: int

    def codes(self, texts: list[str]) -> np.ndarray:
        """Packed codes uint8 [len(texts), bits/8] of `texts`."""
        return run_codes(self.session, tokenize(texts, self.context))


def open_text_model(
    info: ModelInfo, device: str = "auto", threads: int | None = None, required: bool = True
) -> TextModel | None:
    """The text model of the images model `info`; when there is none, a user error (or None
    when not `required`)."""
    path = text_model_path(info.path)
    if not path.is_file():
        if not required:
            return None
        raise TbhError(
            f"no text model beside {printable(info.path)} ({path.name}): text queries need a run "
            "on a clip:NAME backbone (a whole CLIP checkpoint), exported with `tbh export`."
        )
    session, _ = create_session(path, device, threads=threads)
    props = session.get_modelmeta().custom_metadata_map
    if (
        props.get("tbh.input") != "text"
        or props.get("tbh.text_tokenizer") != TOKENIZER
        or props.get("tbh.config_sha256") != info.config_sha256
    ):
        raise TbhError(
            f"{printable(path)} is not the text model of {printable(info.path)} (another run or "
            "tool); export the run again with `tbh export`."
        )
    return TextModel(path, session, int(props["tbh.text_context_length"]))

"""`tbh index --dask`: Dask workers decode and encode the files, the client alone writes the store.

Design (docs/store.md, "Indexing on a Dask cluster"):
- The client lists the folder (or reads `--files`), drops the paths the table already holds and
  cuts the rest into tasks of `task_size` consecutive files.
- The ONNX model travels once per worker, inside a worker plugin (`ModelPlugin`) that the scheduler
  also hands to workers that join or restart later; each worker checks its sha256 and opens one
  onnxruntime session (CUDA when the worker has a GPU, else CPU), shared by its task threads.
- A task decodes its files (Pillow, or nvJPEG on CUDA workers) and returns their packed codes
  plus the positions of the files it could not decode. Tasks have no side effects.
- The client appends each task's codes through the same `StoreWriter.append` as `tbh index`,
  strictly in task order, one commit per task, holding the store's writer lock throughout.

Exactly once follows: a task that ran twice (its worker died, Dask ran it again) is committed
once, since only the client writes and it takes one result per task; a killed client leaves
whole committed tasks, and its rerun skips their paths. The rows land in the same order as with
plain `tbh index` (listing or file-list order, unreadable files left out), and readers see only
committed rows while it runs.
"""

import hashlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from tbhcli.cluster import dask_client
from tbhcli.deploy.runtime import CUDA, ModelInfo, create_session, describe_provider, run_codes
from tbhcli.errors import TbhError
from tbhcli.imaging import nvjpeg
from tbhcli.imaging.decode import DecodedBatch, decode_batches
from tbhcli.imaging.encode import EncodedBatch, encode_batches
from tbhcli.indexing.tables import TableReport, commit_encoded, pending_images
from tbhcli.storage.writer import StoreWriter
from tbhcli.terminal import ProgressCallback, no_progress, shown

DECODERS = ("auto", "pillow", "nvjpeg")
log = logging.getLogger(__name__)


class ModelPlugin(WorkerPlugin):
    """The ONNX model's bytes, shipped once to every worker; opens one session per worker.

    `idempotent`: a client that restarts with the same model does not ship it again to workers
    that already hold it.
    """

    idempotent = True

    def __init__(self, model: bytes, info: ModelInfo, device: str, decoder: str = "auto"):
        self.model = model
        self.sha256 = info.sha256
        self.bits = info.bits
        self.image_size = info.image_size
        self.device = device
        self.decoder = decoder
        self.name = f"tbh-model-{info.sha256[:16]}-{device}-{decoder}"

    def setup(self, worker) -> None:
        """Runs on the worker: refuse bytes that do not hash to the model's sha256."""
        got = hashlib.sha256(self.model).hexdigest()
        if got != self.sha256:
            raise TbhError(
                f"the model that reached Dask worker {worker.address} has sha256 {got[:12]}..., "
                f"not {self.sha256[:12]}...; the file changed or was damaged in transit: rerun."
            )
        self._lock = threading.Lock()
        self._loaded: tuple | None = None

    def load(self) -> tuple:
        """(session, provider, decoder) of this worker, opened on first use by any task thread."""
        with self._lock:
            if self._loaded is None:
                # One intra-op thread: a worker runs one task per thread, so a CPU worker with
                # one thread per core keeps every core busy without oversubscribing it.
                session, provider = create_session(self.model, self.device, threads=1)
                decoder = self.decoder
                if decoder == "auto":  # nvJPEG only pays where the model runs on the GPU too
                    decoder = "nvjpeg" if provider == CUDA and nvjpeg.available() else "pillow"
                elif decoder == "nvjpeg" and not nvjpeg.available():
                    raise TbhError("nvJPEG decoding needs a CUDA GPU and torchvision with CUDA.")
                self._loaded = (session, provider, decoder)
            return self._loaded


@dataclass
class EncodedFiles:
    """What one task returns: its files encoded (positions within the task) and where it ran."""

    batch: EncodedBatch  # codes uint8 [n_ok, bits / 8] of its decodable files, in order
    worker: str
    provider: str
    decoder: str


def _worker_model(plugin_name: str, worker=None) -> ModelPlugin:
    worker = worker or get_worker()
    model = worker.plugins.get(plugin_name)
    if model is None:  # registration failed on this worker; the client saw why
        raise TbhError(f"Dask worker {worker.address} holds no model {plugin_name}; rerun.")
    return model


def _decode(files: list[Path], size: int, batch_size: int, decoder: str) -> Iterator:
    if decoder == "nvjpeg":
        for i in range(0, len(files), batch_size):
            yield DecodedBatch(*nvjpeg.decode_files(files[i : i + batch_size], size))
    else:
        yield from decode_batches(files, size, batch_size, workers=0)


def encode_task(files: list[str], plugin_name: str, batch_size: int) -> EncodedFiles:
    """The task: decode `files` (absolute paths) batch by batch and run the worker's model."""
    model = _worker_model(plugin_name)
    session, provider, decoder = model.load()
    decoded = _decode([Path(f) for f in files], model.image_size, batch_size, decoder)
    batches = list(encode_batches(decoded, lambda pixels: run_codes(session, pixels)))
    codes = [b.outputs for b in batches if b.ok]  # (B, bits / 8) each
    packed = np.concatenate(codes) if codes else np.zeros((0, model.bits // 8), np.uint8)
    ok = [i for b in batches for i in b.ok]
    errors = [e for b in batches for e in b.errors]
    batch = EncodedBatch(packed, ok, errors, len(files))
    return EncodedFiles(batch, get_worker().address, provider, decoder)


def _load_on_worker(plugin_name: str, dask_worker) -> tuple[str, str]:
    """Through `client.run`, which passes the worker as `dask_worker`."""
    _, provider, decoder = _worker_model(plugin_name, dask_worker).load()
    return provider, decoder


def _describe(provider: str, decoder: str) -> str:
    return f"{describe_provider(provider)}, {decoder} decoding"


class ClusterIndexer:
    """Indexes tables through the workers of one Dask client (see the module docstring)."""

    def __init__(self, client, plugin: ModelPlugin, batch_size: int, task_size: int):
        self.client = client
        self.plugin = plugin
        self.batch_size = batch_size
        self.task_size = task_size
        self.workers: dict[str, tuple[str, str]] = {}  # address -> (provider, decoder)

    def announce(self) -> str:
        """Open the model on every current worker; a line that says where it runs."""
        self.workers.update(self.client.run(_load_on_worker, self.plugin.name))
        kinds = [_describe(*w) for w in self.workers.values()]
        counts = ", ".join(f"{kinds.count(k)} x {k}" for k in sorted(set(kinds)))
        return f"{len(kinds)} Dask workers ({counts})"

    @property
    def provider(self) -> str:
        """The onnxruntime provider the workers ran on ("A+B" for a mixed cluster)."""
        return "+".join(sorted({provider for provider, _ in self.workers.values()}))

    def _window(self) -> int:
        """Tasks in flight: two per worker thread, so none waits while the client commits."""
        return 2 * max(1, sum(self.client.nthreads().values())) + 1

    def _result(self, future, files: list[Path]) -> EncodedFiles:
        from distributed.scheduler import KilledWorker

        try:
            result = future.result()
        except KilledWorker:
            raise TbhError(
                f"the task of {files[0]} .. {files[-1]} killed Dask workers repeatedly (out of "
                "memory, or a file that crashes the decoder?); index around it with --files."
            ) from None
        if result.worker not in self.workers:  # a worker that joined or restarted during the run
            self.workers[result.worker] = (result.provider, result.decoder)
            kind = _describe(result.provider, result.decoder)
            log.info(f"Dask worker {shown(result.worker)} joined: {kind}")
        return result

    def index_folder(
        self,
        folder: Path,
        writer: StoreWriter,
        relpaths: list[Path],
        progress: ProgressCallback = no_progress,
    ) -> TableReport:
        """Append every image of `relpaths` that the table does not hold yet, in their order."""
        report = TableReport(folder)
        todo, labels = pending_images(writer, relpaths, report)
        root = Path(folder).resolve()  # workers open the files by absolute path
        starts = range(0, len(todo), self.task_size)
        upcoming = iter(
            [(todo[i : i + self.task_size], labels[i : i + self.task_size]) for i in starts]
        )

        def submit(task: tuple[list[Path], np.ndarray]):
            files = task[0]
            paths = [str(root / p) for p in files]
            future = self.client.submit(
                encode_task, paths, self.plugin.name, self.batch_size, pure=False
            )
            return task, future

        pending = deque(submit(task) for task in itertools.islice(upcoming, self._window()))
        label, done = f"indexing {folder}", 0
        progress(label, 0, len(todo))
        while pending:
            (files, file_labels), future = pending.popleft()
            result = self._result(future, files)
            following = next(upcoming, None)
            if following is not None:
                pending.append(submit(following))
            # The commit point of the task: in task order, whatever order they finished in.
            commit_encoded(writer, report, files, file_labels, result.batch)
            done += len(files)
            progress(label, done, len(todo))
        return report


@contextmanager
def cluster_indexer(
    address: str,
    workers: int | None,
    info: ModelInfo,
    device: str,
    batch_size: int,
    task_size: int,
    decoder: str = "auto",
) -> Iterator[ClusterIndexer]:
    """Connect to `address` ("local" or a scheduler), ship the model to every worker, announce
    where it runs, and yield the indexer."""
    if task_size <= 0:
        raise TbhError(f"--task-size must be positive (got {task_size}).")
    if workers is not None and workers <= 0:
        raise TbhError(f"--workers with --dask local counts Dask workers (got {workers}).")
    if decoder not in DECODERS:
        raise TbhError(f"unknown --jpeg-decoder {decoder!r}; choose one of {', '.join(DECODERS)}.")
    device, decoder = str(device), str(decoder)  # plain strings travel to workers, not CLI enums
    model = info.path.read_bytes()
    if hashlib.sha256(model).hexdigest() != info.sha256:
        raise TbhError(f"{info.path} changed while tbh index started; rerun it.")
    with dask_client(address, workers) as client:
        plugin = ModelPlugin(model, info, device, decoder)
        client.register_plugin(plugin)
        indexer = ClusterIndexer(client, plugin, batch_size, task_size)
        log.info(f"model {shown(info.path)} on {indexer.announce()}")
        yield indexer

"""Inference engines: one `run(batch) -> FashionNetOutput` over eager PyTorch (NCHW or channels_last) and ONNX Runtime.

Every engine takes a float32 NCHW batch already normalised with the checkpoint's mean/std (numpy or torch) and
returns a `FashionNetOutput` of CPU float32 torch tensors, whatever ran it, so callers never care which engine they
got. Engines snapshot the model when built: later changes to the module passed in do not reach them.

Why ONNX Runtime on CPU: on 2 vCPU (EfficientNet-Lite0 FashionNet, 224x224) eager NCHW ran ~25-75 img/s,
channels_last ~55-90 and ONNX Runtime ~185-280 (`fashion bench model` measures it side by side). The dynamo exporter
(`torch.onnx.export(dynamo=True)`) is the default: it folds timm's TF-"same" padding into constants (static H/W,
dynamic batch) and its graph ran ~1.3-1.5x faster than the legacy TorchScript exporter's; both export
`torchvision.ops.roi_align` (aligned=True -> ONNX RoiAlign half_pixel, opset 16+) matching PyTorch to ~1e-7.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch
from torch import nn

from shared.errors import InvalidInput
from shared.fashionnet.model import FashionNetOutput

log = logging.getLogger(__name__)

ENGINE_KINDS: tuple[str, ...] = ("auto", "eager", "channels_last", "onnx")
OUTPUT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(FashionNetOutput))
INPUT_NAME = "images"
ONNX_OPSET = 18  # the dynamo exporter's native opset; RoiAlign's half_pixel mode needs 16+
LEGACY_ONNX_OPSET = 17
Exporter = Literal["dynamo", "legacy", "auto"]

# Bounds on max |ONNX Runtime - PyTorch eager|, per output. Measured: <= 5e-7 on embeddings, landmarks and
# logits and <= 4e-6 on heatmaps (EfficientNet-Lite0, ImageNet backbone, random heads, 224 and 64 px), so these
# leave ~1000x headroom for trained weights (larger logits) and other CPUs' kernels while still catching a wrong
# graph: a landmark off by 1e-3 is 0.2 px at 224, an embedding entry off by 1e-3 moves a cosine by < 1e-3.
ONNX_TOLERANCE: Mapping[str, float] = MappingProxyType({
    "embedding": 1e-3,
    "landmarks": 1e-3,
    "visibility_logits": 1e-2,
    "category_logits": 1e-2,
    "attribute_logits": 1e-2,
    "landmark_heatmaps": 1e-2,
    "garment_maps": 1e-2,
})


def max_abs_diff(a: FashionNetOutput, b: FashionNetOutput) -> dict[str, float]:
    """Max |a - b| per output field present in either; inf where only one has it or the shapes differ."""
    diffs: dict[str, float] = {}
    for name in OUTPUT_NAMES:
        x, y = getattr(a, name), getattr(b, name)
        if x is None and y is None:
            continue
        if x is None or y is None or tuple(x.shape) != tuple(y.shape):
            diffs[name] = math.inf
            continue
        diff = (x.detach().float().cpu() - y.detach().float().cpu()).abs()
        diffs[name] = float(diff.max()) if diff.numel() else 0.0
    return diffs


def tolerance_violations(diffs: Mapping[str, float],
                         tolerance: Mapping[str, float] = ONNX_TOLERANCE) -> dict[str, float]:
    """The fields of `max_abs_diff`'s result over their bound (NaN counts as over); empty when all agree."""
    return {name: d for name, d in diffs.items() if not d <= tolerance.get(name, 0.0)}


def physical_cores() -> int:
    """Physical cores this process may use: affinity, minus SMT siblings, capped by a cgroup CPU quota.

    ONNX Runtime's intra-op threads should match physical cores; a container's quota matters more than the
    host's core count (64 threads on a 2-CPU quota thrash).
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores: set[str] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                cores.add((topology / name).read_text().strip())
                break
            except OSError:
                continue
        else:
            cores.add(str(cpu))
    count = len(cores)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return max(1, count)


def _to_cpu(out: FashionNetOutput) -> FashionNetOutput:
    return FashionNetOutput(**{name: None if (v := getattr(out, name)) is None else v.float().cpu()
                               for name in OUTPUT_NAMES})


def _check_batch(batch: np.ndarray | torch.Tensor, input_size: int | None) -> None:
    if not isinstance(batch, np.ndarray | torch.Tensor):
        raise InvalidInput(f"expected a float32 NCHW numpy array or torch tensor, got {type(batch).__name__}")
    shape = tuple(batch.shape)
    if len(shape) != 4 or shape[1] != 3 or shape[0] < 1:
        raise InvalidInput(f"expected a non-empty float32 batch of shape (N, 3, H, W), got shape {shape}")
    if input_size is not None and shape[2:] != (input_size, input_size):
        raise InvalidInput(f"expected images of {input_size}x{input_size} (the exported input size), "
                           f"got {shape[2]}x{shape[3]}")
    floating = batch.dtype.is_floating_point if isinstance(batch, torch.Tensor) else batch.dtype.kind == "f"
    if not floating:
        raise InvalidInput(f"expected float32 images normalised with the model's mean/std, got dtype {batch.dtype}")


class InferenceEngine(ABC):
    """Runs a normalised float32 NCHW batch; returns CPU float32 torch tensors in a FashionNetOutput."""

    kind: str
    device: torch.device
    input_size: int | None = None  # None: any size the model accepts

    @abstractmethod
    def run(self, batch: np.ndarray | torch.Tensor) -> FashionNetOutput: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, device={str(self.device)!r})"


class EagerEngine(InferenceEngine):
    """PyTorch under `inference_mode`, on a private eval-mode copy of the model, NCHW or channels_last."""

    def __init__(self, model: nn.Module, channels_last: bool = False, *,
                 device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.channels_last = channels_last
        self.kind = "channels_last" if channels_last else "eager"
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = copy.deepcopy(model).eval().to(self.device, memory_format=memory_format)

    def run(self, batch: np.ndarray | torch.Tensor) -> FashionNetOutput:
        _check_batch(batch, self.input_size)
        x = torch.from_numpy(np.ascontiguousarray(batch)) if isinstance(batch, np.ndarray) else batch
        x = x.to(self.device, torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return _to_cpu(self.model(x))


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class _TupleOutputs(nn.Module):
    """ONNX export needs a tuple of tensors, not a dataclass; the names travel as the graph's output names."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(images).as_tuple()


def export_onnx(model: nn.Module, path: str | Path, *, input_size: int, exporter: Exporter = "auto") -> Path:
    """Export `model` (forward -> FashionNetOutput) to ONNX with a dynamic batch axis and static H = W = input_size.

    Outputs are named after the FashionNetOutput fields the model fills. "auto" tries the dynamo exporter and
    falls back to the legacy TorchScript one (opset 17). Written to a temp file then renamed, so a concurrent
    reader never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _TupleOutputs(copy.deepcopy(model).cpu().eval()).eval()
    example = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = wrapper.model(example)
    names = [name for name in OUTPUT_NAMES if getattr(out, name) is not None]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if exporter in ("dynamo", "auto"):
            try:
                _export_dynamo(wrapper, example, tmp, names)
            except Exception as exc:  # the dynamo exporter fails in many ways; "auto" means try the other one
                if exporter == "dynamo":
                    raise
                log.warning("dynamo ONNX export failed (%s: %s); trying the legacy exporter",
                            type(exc).__name__, exc)
                _export_legacy(wrapper, example, tmp, names)
        elif exporter == "legacy":
            _export_legacy(wrapper, example, tmp, names)
        else:
            raise InvalidInput(f"expected exporter 'dynamo', 'legacy' or 'auto', got {exporter!r}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """The dynamo exporter's onnxscript/onnx_ir passes log hundreds of INFO lines per export; keep WARNING+."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_dynamo(wrapper: nn.Module, example: torch.Tensor, path: Path, names: Sequence[str]) -> None:
    with warnings.catch_warnings(), _quiet_exporter_logs():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), path, input_names=[INPUT_NAME], output_names=list(names),
                          dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1)}},
                          opset_version=ONNX_OPSET, dynamo=True, external_data=False, verbose=False)


def _export_legacy(wrapper: nn.Module, example: torch.Tensor, path: Path, names: Sequence[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), path, input_names=[INPUT_NAME], output_names=list(names),
                          dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *names)},
                          opset_version=LEGACY_ONNX_OPSET, dynamo=False, do_constant_folding=True)


def onnx_cache_path(cache_dir: str | Path, model: nn.Module, *, input_size: int, cache_key: str | None = None) -> Path:
    """`<key>-<size>px-<digest>.onnx`; the digest covers the weights, so a retrained model never hits a stale file.

    `cache_key` (e.g. the checkpoint's version) only makes the name readable; the weights, the model class, the
    input size and the torch/opset versions decide the digest.
    """
    h = hashlib.sha256()
    h.update(f"{type(model).__qualname__}|{input_size}|{torch.__version__}|{ONNX_OPSET}".encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", cache_key or type(model).__name__.lower())
    return Path(cache_dir) / f"{stem}-{input_size}px-{h.hexdigest()[:16]}.onnx"


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxEngine(InferenceEngine):
    """ONNX Runtime session over an exported file; outputs mapped back to FashionNetOutput fields by name."""

    kind = "onnx"

    def __init__(self, path: str | Path, *, providers: Sequence[str] | None = None,
                 intra_op_threads: int | None = None, spinning: bool = False) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads or physical_cores()
        # ONNX Runtime's worker threads busy-wait after each run by default. In a service that shares its cores
        # with gRPC, the vector search and the database, that spinning starved them: FindSimilar p50 went from
        # 43 to 21 ms with spinning off (docs/BENCHMARKS.md), for a few percent of raw forward speed.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(self.path), options,
                                            providers=list(providers or default_providers()))
        self.providers = self.session.get_providers()
        self.device = torch.device("cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu")
        self.output_names = [o.name for o in self.session.get_outputs()]
        unknown = sorted(set(self.output_names) - set(OUTPUT_NAMES))
        if unknown:
            raise InvalidInput(f"expected ONNX outputs among {list(OUTPUT_NAMES)}, {self.path} has {unknown}")
        (inp,) = self.session.get_inputs()
        self.input_name = inp.name
        height, width = inp.shape[2:]
        self.input_size = height if isinstance(height, int) and height == width else None

    @classmethod
    def from_model(cls, model: nn.Module, *, input_size: int, cache_dir: str | Path | None = None,
                   cache_key: str | None = None, exporter: Exporter = "auto", **kwargs) -> OnnxEngine:
        """Export `model` (or reuse its cached export in `cache_dir`) and open a session on it."""
        if cache_dir is None:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="fashionnet-onnx-") as tmp:
                # The session holds the graph in memory; the file can go once it is open.
                return cls(export_onnx(model, Path(tmp) / "model.onnx", input_size=input_size, exporter=exporter),
                           **kwargs)
        path = onnx_cache_path(cache_dir, model, input_size=input_size, cache_key=cache_key)
        if path.is_file():
            log.info("reusing ONNX export %s", path)
        else:
            log.info("exporting %s to ONNX at %s", type(model).__name__, path)
            export_onnx(model, path, input_size=input_size, exporter=exporter)
        return cls(path, **kwargs)

    def run(self, batch: np.ndarray | torch.Tensor) -> FashionNetOutput:
        _check_batch(batch, self.input_size)
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        outputs = self.session.run(self.output_names, {self.input_name: x})
        return FashionNetOutput(**{name: torch.from_numpy(v) for name, v in zip(self.output_names, outputs,
                                                                                 strict=True)})


def verify_engine(engine: InferenceEngine, model: nn.Module, *, input_size: int, batch: int = 2,
                  tolerance: Mapping[str, float] = ONNX_TOLERANCE) -> dict[str, float]:
    """Max abs diffs of `engine` vs eager PyTorch on a seeded random batch; raises InvalidInput over tolerance."""
    x = torch.randn(batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    diffs = max_abs_diff(engine.run(x), EagerEngine(model, device="cpu").run(x))
    bad = tolerance_violations(diffs, tolerance)
    if bad:
        raise InvalidInput(f"expected {engine.kind} outputs within {dict(tolerance)} of PyTorch, got diffs {bad}")
    return diffs


def create_engine(model: nn.Module, kind: str = "auto", *, input_size: int, cache_dir: str | Path | None = None,
                  cache_key: str | None = None, device: str | torch.device | None = None) -> InferenceEngine:
    """The engine `kind` names, for `model` at `input_size` (ONNX exports are cached in `cache_dir`).

    "auto": on a GPU, eager fp32 there (the onnxruntime wheel here has no CUDA provider; on an H200 channels_last
    was no faster up to batch 32, ~15% faster at 128); on CPU, ONNX Runtime if the export works and matches
    PyTorch within ONNX_TOLERANCE, else channels_last (the faster eager layout on CPU). `device` defaults to CUDA
    when available. Note cuDNN's default TF32 convolutions put GPU outputs ~1e-3 from CPU ones.
    """
    if kind not in ENGINE_KINDS:
        raise InvalidInput(f"expected an engine kind among {list(ENGINE_KINDS)}, got {kind!r}")
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if kind == "eager":
        return EagerEngine(model, device=device)
    if kind == "channels_last":
        return EagerEngine(model, channels_last=True, device=device)
    if kind == "onnx":
        return OnnxEngine.from_model(model, input_size=input_size, cache_dir=cache_dir, cache_key=cache_key)
    if device.type != "cpu":
        return EagerEngine(model, device=device)
    try:
        engine = OnnxEngine.from_model(model, input_size=input_size, cache_dir=cache_dir, cache_key=cache_key)
        diffs = verify_engine(engine, model, input_size=input_size)
    except Exception as exc:  # any export/runtime/tolerance failure means: serve with PyTorch instead
        log.warning("ONNX Runtime engine unavailable (%s: %s); using channels_last PyTorch", type(exc).__name__, exc)
        return EagerEngine(model, channels_last=True, device=device)
    log.info("ONNX Runtime engine verified against PyTorch: %s", diffs)
    return engine

"""Interchangeable MiniLM forward passes ("kernels"): eager torch and ONNX Runtime, float32 and int8.

A kernel maps ``input_ids`` and ``attention_mask`` (int64 numpy [B, T]) to ``last_hidden_state``
(float32 numpy [B, T, H]), so the encoder can swap one for another without changing its windowing.

The ONNX files are built here from the installed safetensors weights (no download) and cached per
user under ``$NLPSERVE_CACHE/onnx`` (default ``~/.cache/nlpserve/onnx``), keyed by the weights' sha.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, get_args

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from nlpserve.resources import checksum
from nlpserve.schemas import DEFAULT_ENCODER_KERNEL, EncoderKernel

KERNELS = get_args(EncoderKernel)
ONNX_KERNELS = ("onnx", "onnx-int8")  # the others are torch's
DEFAULT_KERNEL = DEFAULT_ENCODER_KERNEL
OPSET = 17
# Bump when the export or quantization recipe changes, so stale cached files are not reused.
RECIPE = "v1"


class Kernel(Protocol):
    name: str

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


def _load_model(model_dir: Path, attn: str = "sdpa") -> torch.nn.Module:
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in every replica's log
    return AutoModel.from_pretrained(model_dir, use_safetensors=True, attn_implementation=attn).eval()


class TorchKernel:
    """Eager torch, float32 or with the Linear layers dynamically quantized to int8 (per tensor)."""

    def __init__(self, model_dir: Path, threads: int = 1, int8: bool = False) -> None:
        self.name = "torch-int8" if int8 else "torch"
        torch.set_num_threads(threads)  # process-wide: one kernel per replica process
        model = _load_model(model_dir)
        if int8:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated, still works in 2.13
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model
        self.device = torch.device("cpu")

    def to(self, device: torch.device) -> None:
        """Run on ``device`` (float32 only: dynamic int8 runs on the CPU)."""
        if device.type != "cpu" and self.name != "torch":
            raise ValueError(f"kernel {self.name} runs on the CPU only")
        self.model = self.model.to(device)
        self.device = device

    @torch.inference_mode()
    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        ids_t = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)).to(self.device)
        return self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float().cpu().numpy()


class OnnxKernel:
    """ONNX Runtime on the CPU, one session with ``threads`` intra-op threads and all graph optimizations.
    Its runs may be called from several threads at once."""

    def __init__(self, name: str, path: Path, threads: int = 1) -> None:
        self.name = name
        self.path = path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: the cores are shared with the other replicas.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {
            "input_ids": np.ascontiguousarray(ids, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(mask, dtype=np.int64),
        }
        return self.session.run(["last_hidden_state"], feed)[0]


def cache_dir() -> Path:
    """Where built ONNX files live: ``$NLPSERVE_CACHE/onnx``, else ``~/.cache/nlpserve/onnx``."""
    root = os.environ.get("NLPSERVE_CACHE") or Path.home() / ".cache" / "nlpserve"
    return Path(root) / "onnx"


def onnx_path(model_dir: Path, variant: str, cache: Path | None = None) -> Path:
    """The cached file of ``variant`` ("fp32" or "int8") for the weights in ``model_dir``."""
    digest = checksum(Path(model_dir) / "config.json", Path(model_dir) / "model.safetensors")
    return (cache or cache_dir()) / f"{digest}-{RECIPE}-{variant}.onnx"


class _LastHidden(torch.nn.Module):
    """Only ``last_hidden_state`` as the graph's output, so the unused pooler is not exported."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def export_fp32(model_dir: Path, out: Path) -> None:
    """Export the model to ONNX with dynamic batch and sequence axes."""
    # Eager attention traces to plain MatMul/Softmax, which ORT's graph optimizer and quantizer handle.
    model = _LastHidden(_load_model(model_dir, attn="eager"))
    # A padded example row, so the trace keeps the padding-mask path.
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in torch 2.13 but needs no onnxscript, exports in ~2 s
        # instead of ~8 s, and its graph ran ~10% faster in ORT than the torch.export one here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, mask),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, out: Path) -> None:
    """Dynamic int8: int8 weights per output channel, uint8 activations quantized at run time.

    Per-channel keeps sentence embeddings at cosine ~0.99 of float32 (per-tensor: ~0.94). The full
    8-bit range (no reduce_range) is safe on AVX-512 VNNI, whose u8 x s8 dot products do not saturate."""
    quantize_dynamic(source, out, weight_type=QuantType.QInt8, per_channel=True, reduce_range=False)


def _build(path: Path, make: Callable[[Path], None]) -> Path:
    """Run ``make(tmp)`` and move the result to ``path`` atomically, unless ``path`` exists already.

    Replicas starting together may all build; each writes its own temp file and os.replace makes the
    last one win, so a reader never sees a half-written file."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        make(tmp)
        tmp.chmod(0o644)  # mkstemp makes it 0600; the cache is a plain per-user cache, not a secret
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def ensure_onnx(model_dir: Path, variant: str, cache: Path | None = None) -> Path:
    """The cached ONNX file of ``variant`` ("fp32" or "int8"), built first if missing."""
    model_dir = Path(model_dir)
    if variant == "fp32":
        return _build(onnx_path(model_dir, "fp32", cache), lambda tmp: export_fp32(model_dir, tmp))
    if variant == "int8":
        source = ensure_onnx(model_dir, "fp32", cache)
        return _build(onnx_path(model_dir, "int8", cache), lambda tmp: quantize_int8(source, tmp))
    raise ValueError(f"unknown ONNX variant {variant!r}, expected 'fp32' or 'int8'")


def load_kernel(name: str, model_dir: Path, threads: int = 1, cache: Path | None = None) -> Kernel:
    """The kernel called ``name`` (one of KERNELS) for the model in ``model_dir``."""
    if name in ("torch", "torch-int8"):
        return TorchKernel(Path(model_dir), threads, int8=name == "torch-int8")
    if name in ONNX_KERNELS:
        variant = "int8" if name == "onnx-int8" else "fp32"
        return OnnxKernel(name, ensure_onnx(model_dir, variant, cache), threads)
    raise ValueError(f"unknown kernel {name!r}, expected one of {', '.join(KERNELS)}")

"""Where a replica runs its model: the GPU Ray gave it, else the CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def choose_device(gpu_ids: Sequence, cuda_available: bool | None = None) -> torch.device:
    """CUDA when this process was assigned a GPU (a replica passes ``ray.get_gpu_ids()``, from the
    deployment's ``num_gpus``) and torch can use it, else CPU. Ray sets CUDA_VISIBLE_DEVICES to the
    assigned GPUs, so the first visible one is ours."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    return torch.device("cuda", 0) if gpu_ids and cuda_available else torch.device("cpu")

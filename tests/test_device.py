"""Device choice: CUDA only when Ray assigned the replica a GPU and torch can use it."""

import pytest
import torch

from nlpserve.device import choose_device
from nlpserve.models.encoder import MiniLMEncoder
from nlpserve.models.hf import SequenceClassifier
from nlpserve.tokens import Tokenizer


def test_cuda_only_when_a_gpu_is_assigned_and_usable():
    assert choose_device(gpu_ids=[], cuda_available=True) == torch.device("cpu")  # num_gpus: 0
    assert choose_device(gpu_ids=[0], cuda_available=False) == torch.device("cpu")  # no CUDA build
    assert choose_device(gpu_ids=["0"], cuda_available=True) == torch.device("cuda", 0)
    assert choose_device([0]) == torch.device("cpu")  # this machine: no CUDA


def test_models_run_on_the_device_they_were_moved_to(tiny_models):
    model = SequenceClassifier("sentiment", str(tiny_models["sentiment"]))
    batch = Tokenizer(model.spec)(["Paris is lovely."])
    before = model(batch, [0])
    model.to(torch.device("cpu"))
    assert model.device == torch.device("cpu") and model(batch, [0]) == before


@pytest.mark.parametrize("kernel", ["onnx-int8", "onnx", "torch-int8"])
def test_cpu_only_kernels_are_refused_on_a_gpu(kernel):
    encoder = MiniLMEncoder(kernel=kernel)
    with pytest.raises(ValueError, match="CPU only"):
        encoder.to(torch.device("cuda", 0))

"""The batch of perturbed passes chosen from the device: 1 on a CPU; on a CUDA GPU as many as fit
in half its free memory at one pass's measured peak, within 1 to 32."""
import numpy as np
import pytest
import torch

from toys import SquareEvidence, evidence_image
from xaiseg.explain.base import MAX_GPU_BATCH, PerturbationEngine, batch_from_memory, pass_bytes, preferred_batch
from xaiseg.models.base import SlicePrompt

MB = 1 << 20


def test_the_batch_takes_half_the_free_memory_within_bounds():
    assert batch_from_memory(8000 * MB, 100 * MB) == 32 == MAX_GPU_BATCH  # 40 would fit
    assert batch_from_memory(1000 * MB, 100 * MB) == 5
    assert batch_from_memory(150 * MB, 100 * MB) == 1  # not even one fits in half: still one at a time
    assert batch_from_memory(1000 * MB, 100 * MB, share=0.9) == 9
    assert batch_from_memory(1000 * MB, 0) == 8  # nothing measured: a middling batch


def test_a_cpu_gets_single_passes():
    assert preferred_batch(SquareEvidence()) == 1


def test_a_cuda_device_gets_the_batch_its_free_memory_holds(monkeypatch):
    """The CUDA path on this CPU-only machine: the device's free memory is what torch would report
    (here set), the pass's peak as if measured before; the engine takes the batch from them."""
    toy = SquareEvidence()
    toy.device = "cuda:0"
    toy._pass_bytes = {(64, 64): 100 * MB}
    seen = []

    def free_memory(device):
        seen.append(device)
        return 1000 * MB, 80000 * MB

    monkeypatch.setattr(torch.cuda, "mem_get_info", free_memory)
    # torch's own reserve, held but unused, counts as free for the batch
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 300 * MB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 100 * MB)
    assert preferred_batch(toy, (64, 64)) == 6 and seen == [torch.device("cuda:0")]
    engine = PerturbationEngine(toy, evidence_image(), SlicePrompt(box=(36, 36, 55, 55)), np.ones((64, 64), bool))
    assert engine.batch_size == 6
    chosen = PerturbationEngine(toy, evidence_image(), SlicePrompt(box=(36, 36, 55, 55)), np.ones((64, 64), bool),
                                batch_size=3)
    assert chosen.batch_size == 3  # the user's choice stands


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_real_pass_on_the_gpu_is_measured_once():
    from xaiseg.models.litemedsam import LiteMedSAM

    model = LiteMedSAM(device="cuda")
    used = pass_bytes(model)
    assert 0 < used < torch.cuda.get_device_properties(0).total_memory
    assert pass_bytes(model) == used and list(model._pass_bytes) == [(256, 256)]
    assert 1 <= preferred_batch(model) <= MAX_GPU_BATCH

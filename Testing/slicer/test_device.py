"""Device selection: CUDA, then MPS, then CPU, asked of the worker's interpreter without importing
torch into Slicer's process; one clear error naming the fix when CUDA is chosen and torch cannot
use it; a GPU out-of-memory failure gets its own message and a CPU retry."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import slicer
from XAISegExtensionLib import device, mrml
from XAISegExtensionLib.logic import FAILED, RunSettings, XAISegLogic
from XAISegExtensionLib.selftest import roi_from_kji

MODULE = Path(__file__).resolve().parents[2] / "XAISegExtension"


@pytest.fixture(scope="module")
def info():
    return device.probe(sys.executable, refresh=True)


def test_probe_reports_this_torch_without_importing_it_here():
    code = (f"import json, sys; sys.path.insert(0, {str(MODULE)!r}); from XAISegExtensionLib import device, logic; "
            "info = device.probe(); print(json.dumps({'torch_here': 'torch' in sys.modules, "
            "'torch': info.torch, 'device': device.resolve('auto', info)}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["torch_here"] is False, "asking for the device imported torch into the caller"
    assert answer["torch"] == pytest.importorskip("torch").__version__
    assert answer["device"] in ("cpu", "cuda", "mps")


def test_auto_picks_cpu_when_cuda_is_absent(info):
    if info.cuda_available or info.mps_available:
        pytest.skip("this machine has a GPU; the CPU fallback is checked where there is none")
    assert info.cuda_devices == []
    assert device.resolve("auto", info) == "cpu"
    assert device.resolve("AUTO", info) == "cpu" and device.resolve("", info) == "cpu"
    assert device.resolve("cuda", info, force_cpu=True) == "cpu"
    logic = XAISegLogic(python=sys.executable)
    assert logic.resolveDevice("auto") == "cpu"
    logic.forceCpu = True
    assert logic.resolveDevice("cuda") == "cpu"


def test_the_panel_asks_without_waiting(info):
    device._CACHE.pop(sys.executable, None)
    logic = XAISegLogic(python=sys.executable)
    answers = []
    logic.deviceCallback = answers.append
    logic.startDeviceProbe()
    assert logic.busy and answers == [], "the probe must answer through poll(), not block the caller"
    while not answers:
        logic.poll()
        time.sleep(0.05)
    assert answers[0] == info and not logic.busy
    logic.startDeviceProbe()  # known now: answered at once
    assert answers == [info, info]


def test_the_preference_order_is_cuda_then_mps_then_cpu():
    gpu = device.TorchInfo(torch="2.14.1+cu130", cuda_built=True, cuda_version="13.0", cuda_available=True,
                           cuda_devices=["NVIDIA H200"], mps_built=False)
    mac = device.TorchInfo(torch="2.14.1", mps_built=True, mps_available=True)
    assert device.resolve("auto", gpu) == "cuda" and device.resolve("cuda:0", gpu) == "cuda:0"
    assert device.describe("cuda", gpu) == "cuda (NVIDIA H200)"
    assert device.resolve("auto", mac) == "mps" and device.resolve("mps", mac) == "mps"
    with pytest.raises(device.DeviceError, match="'cuda:1' does not exist.*cuda:0 NVIDIA H200"):
        device.resolve("cuda:1", gpu)


def test_cuda_where_torch_has_no_cuda_gives_one_error_naming_the_fix(info):
    cpu_only = device.TorchInfo(torch="2.14.1+cpu", cuda_built=False, cuda_version=None)
    with pytest.raises(device.DeviceError) as err:
        device.resolve("cuda", cpu_only)
    text = str(err.value)
    assert "CPU-only build" in text and "2.14.1+cpu" in text
    assert "PyTorch Utils" in text and "CUDA computation backend" in text and "Force CPU" in text
    with pytest.raises(device.DeviceError, match="needs PyTorch, which is not installed"):
        device.resolve("cuda", device.TorchInfo(torch=None, error="No module named 'torch'"))
    with pytest.raises(device.DeviceError, match="device 'gpu' is unknown; expected auto, cpu, cuda"):
        device.resolve("gpu", cpu_only)
    with pytest.raises(device.DeviceError, match="'mps' was chosen.*unavailable"):
        device.resolve("mps", cpu_only)
    if not info.cuda_available:  # this machine's real torch: built with CUDA, no GPU to use
        with pytest.raises(device.DeviceError) as err:
            device.resolve("cuda", info)
        text = str(err.value)
        assert ("no usable NVIDIA GPU" in text and "NVIDIA driver" in text) or "CPU-only build" in text
        assert "Force CPU" in text


@pytest.fixture
def phantom(scene):
    rng = np.random.default_rng(0)
    a = rng.normal(100, 5, (8, 64, 64)).astype(np.float32)
    a[:, 20:44, 20:44] += 250
    volume = slicer.util.addVolumeFromArray(a, np.diag([-1.0, -1.0, 2.0, 1.0]), name="phantom")
    return volume, roi_from_kji(scene, volume, (0, 18, 18), (7, 45, 45), "phantom box")


def test_logic_refuses_cuda_before_starting_anything(scene, phantom, info):
    if info.cuda_available:
        pytest.skip("this machine has a usable GPU")
    logic = XAISegLogic(scene, python=sys.executable)
    before = scene.GetNumberOfNodes()
    with pytest.raises(device.DeviceError, match="Force CPU"):
        logic.start(*phantom, RunSettings(device="cuda"))
    assert logic.job is None and scene.GetNumberOfNodes() == before


def worker_error_event(exc: BaseException) -> dict:
    """The error event xaiseg.worker.main writes for an unexpected exception (its own formula)."""
    return {"event": "error", "error": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}"}


def test_gpu_out_of_memory_gets_its_own_message_and_a_cpu_retry(scene, phantom):
    torch = pytest.importorskip("torch")
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                 "15.77 GiB of which 1.02 GiB is free.")
    event = worker_error_event(oom)
    assert event["error"] == "OutOfMemoryError" and device.is_out_of_memory(event["error"], event["message"])
    assert device.is_out_of_memory("RuntimeError", "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB")
    assert not device.is_out_of_memory("RuntimeError", "RuntimeError: shape '[1, 3]' is invalid")
    assert not device.is_out_of_memory("InputError", "box (0, 0)..(9, 9) lies outside the image")
    logic = XAISegLogic(scene, python=sys.executable)
    mine = mrml.add_segmentation(scene, np.ones((8, 64, 64), np.uint8), phantom[0], "my segmentation", "body")
    first = logic.start(*phantom, RunSettings(threads=1, slice_range=(3, 3), output_segmentation=mine.GetID(),
                                              show_3d=True))
    logic.cancel()
    assert logic.waitStopped(5.0)
    # the worker's last line, had the GPU run out of memory in that run
    logic._conclude(first, worker_error_event(oom), 1)
    assert logic.state.status == FAILED and logic.state.out_of_memory
    assert logic.state.error.startswith("the GPU ran out of memory") and "Retry on the CPU" in logic.state.error
    assert "CUDA out of memory" in logic.state.error
    again = logic.retryOnCpu()
    try:
        assert again is not first and again.request.segmenter.device == "cpu"
        assert again.request.prompt == first.request.prompt
        assert again.request.slice_range == (3, 3)
        assert (again.settings.output_segmentation, again.settings.show_3d) == (mine.GetID(), True)
    finally:
        logic.cancel()
        assert logic.waitStopped(5.0)


def test_the_cost_estimate_names_the_device_the_run_will_use(scene, phantom, info):
    device._CACHE.pop(sys.executable, None)
    logic = XAISegLogic(scene, python=sys.executable)
    logic.startDeviceProbe()
    waiting = logic.estimateCost(*phantom, RunSettings(device="auto"))  # the probe imports torch: still running
    assert waiting["text"].endswith("on auto (still detecting the device)") and logic.busy
    while logic.busy:  # the panel's timer polls until the probe answers
        logic.poll()
        time.sleep(0.05)
    real = device.resolve("auto", info)
    cost = logic.estimateCost(*phantom, RunSettings(device="auto"))
    assert cost["device"] == real and "auto" not in cost["text"]
    assert cost["text"].endswith(f"about {cost['minutes']:.1f} min on {device.describe(real, info)}")
    forced = logic.estimateCost(*phantom, RunSettings(device="cuda", force_cpu=True))
    assert forced["device"] == "cpu" and forced["text"].endswith(" on cpu")
    # a calibration is kept per segmenter and real device: 'auto' finds the one made on that device
    timing = {"seconds_encoder": 0.5, "seconds_decoder": 0.01, "seconds_load": 1.0, "seconds_write_mb": 0.0}
    logic.calibration[logic.calibrationKey(RunSettings(device=real))] = timing
    assert logic.calibrationKey(RunSettings(device="auto")) == logic.calibrationKey(RunSettings(device=real))
    calibrated = logic.estimateCost(*phantom, RunSettings(device="auto"))
    assert calibrated["calibrated"] and calibrated["seconds"] == pytest.approx(
        1.0 + calibrated["full_pass_equivalents"] * 0.5 + calibrated["decoder_passes"] * 0.01)
    if real != "cpu":
        assert not logic.estimateCost(*phantom, RunSettings(device="auto", force_cpu=True))["calibrated"]

"""MedSAM ViT-B through segment-anything at a small size, and plain torch / MONAI segmenters."""
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch

from xaiseg import errors
from xaiseg.models.base import SlicePrompt

TINY = dict(img_size=64, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=4,
            prompt_dim=32, decoder_mlp_dim=64, decoder_heads=2)


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    pytest.importorskip("segment_anything")
    from xaiseg.models.medsam import SamArch, build_sam

    torch.manual_seed(0)
    model = build_sam(SamArch(**TINY))
    path = tmp_path / "medsam_tiny.pth"
    torch.save(model.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), model


def test_medsam_loads_verified_checkpoint_and_segments(tiny_checkpoint):
    from xaiseg.models.medsam import MedSAMViT, SamArch

    path, sha, original = tiny_checkpoint
    seg = MedSAMViT.from_options(checkpoint=str(path), sha256=sha, arch=SamArch(**TINY))
    assert seg.weights_sha256 == sha
    for (name, a), b in zip(seg.module.state_dict().items(), original.state_dict().values()):
        assert torch.equal(a, b), name
    image = np.random.default_rng(0).random((40, 50)).astype(np.float32)
    mask = seg.segment(image, SlicePrompt(box=(10, 5, 30, 25)))
    assert mask.shape == (40, 50) and mask.dtype == bool
    emb = seg.embed(image)
    logits = seg.decode(emb, SlicePrompt(box=(10, 5, 30, 25)))
    assert np.array_equal(logits > 0, mask)  # decoding a cached embedding gives the same answer


def test_medsam_refuses_wrong_hash(tiny_checkpoint):
    from xaiseg.models.medsam import MedSAMViT, SamArch

    path, sha, _ = tiny_checkpoint
    wrong = "f" * 64
    with pytest.raises(errors.WeightsHashError) as info:
        MedSAMViT.from_options(checkpoint=str(path), sha256=wrong, arch=SamArch(**TINY))
    assert sha in str(info.value) and wrong in str(info.value)


def test_medsam_download_into_cache(tiny_checkpoint, tmp_path):
    from xaiseg.models.medsam import MedSAMViT, SamArch

    path, sha, _ = tiny_checkpoint
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(path.parent), **k)

        def log_message(self, *a):
            hits.append(a)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{path.name}"
        cache = tmp_path / "cache"
        seg = MedSAMViT.from_options(url=url, sha256=sha, cache_dir=str(cache), arch=SamArch(**TINY))
        assert (cache / f"{sha[:16]}-{path.name}").is_file() and seg.weights_sha256 == sha
        n = len(hits)
        MedSAMViT.from_options(url=url, sha256=sha, cache_dir=str(cache), arch=SamArch(**TINY))
        assert len(hits) == n  # served from the cache
        bad_cache = tmp_path / "bad"
        with pytest.raises(errors.WeightsHashError):
            MedSAMViT.from_options(url=url, sha256="0" * 64, cache_dir=str(bad_cache), arch=SamArch(**TINY))
        assert list(bad_cache.iterdir()) == []  # nothing half-downloaded left behind
    finally:
        server.shutdown()
        server.server_close()


def test_torchscript_and_factory_segment_known_square(tmp_path):
    from toys import Ramp
    from xaiseg.models.torch_model import TorchSegmenter

    image = np.zeros((32, 32), np.float32)
    image[8:16, 10:20] = 1.0
    ts = tmp_path / "toy.pt"
    torch.jit.script(Ramp()).save(str(ts))
    for seg in (TorchSegmenter.from_options(torchscript=str(ts), class_index=0),
                TorchSegmenter.from_options(factory="toys:ramp", class_index=0)):
        mask = seg.segment(image, SlicePrompt(box=(0, 0, 31, 31)))
        assert np.array_equal(mask, image > 0.5)


def test_multiclass_margin_is_argmax():
    from xaiseg.models.torch_model import TorchSegmenter

    class Three(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x, 1 - x, torch.full_like(x, 0.4)], dim=1)

    seg = TorchSegmenter(Three(), class_index=2)
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    stacked = np.stack([image, 1 - image, np.full_like(image, 0.4)])
    mask = seg.segment(image, SlicePrompt(box=(0, 0, 15, 15)))
    assert np.array_equal(mask, stacked.argmax(0) == 2)


def test_monai_network_end_to_end(tmp_path):
    pytest.importorskip("monai")
    import SimpleITK as sitk

    from xaiseg.cli import main

    arr = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "v.nrrd"))
    kwargs = '{"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": [4, 4, 8, 8, 16, 4]}'
    assert main(["segment", str(tmp_path / "v.nrrd"), "-o", str(tmp_path / "o"), "--box", "0,0,0,31,31,2", "-q",
                 "--model", "torch", "--factory", "monai.networks.nets:BasicUNet", "--factory-kwargs", kwargs,
                 "--class-index", "1"]) == 0
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o" / "v_mask.nrrd")))
    assert mask.shape == (3, 32, 32)

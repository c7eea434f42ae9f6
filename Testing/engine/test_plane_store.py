"""The finished planes of an explanation kept on disk until they are written (issue 14's bounded
memory): bundles read back equal, a run whose planes all went to disk writes the same files as one
that kept them in memory, and its folder goes when the run is closed, dropped or cancelled; a plane
that cannot be written stays in memory, never lost."""
import gc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from test_layers import MarkedSquareToy
from test_trust import toy_volume
from xaiseg import errors, plane_store, spill
from xaiseg.explain import make_explainer
from xaiseg.explain.base import Explanation
from xaiseg.pipeline import SegmentConfig, Session
from xaiseg.plane_store import ExplanationSlices, PlaneStore, PlaneVolumes, StoredSlices
from xaiseg.progress import CallbackProgress, CancelToken
from xaiseg.roi import RoiConfig
from xaiseg.volume import BoxPrompt


def bundle(seed: int):
    rng = np.random.default_rng(seed)
    return {"map": rng.random((9, 7), dtype=np.float32), "mask": rng.random((9, 7)) > 0.5}


def test_the_newest_stay_in_memory_and_older_ones_read_back_equal_from_files(tmp_path):
    one = bundle(0)
    store = PlaneStore(memory_bytes=sum(a.nbytes for a in one.values()), folder=tmp_path)
    for k in range(3):
        store.put(k, bundle(k))
    assert list(store.memory) == [2] and sorted(store.files) == [0, 1] and store.written == 2
    folder = store.folder
    assert folder.parent == tmp_path and len(list(folder.iterdir())) == 2
    for k in range(3):
        got = store.get(k)
        assert sorted(got) == ["map", "mask"] and got["mask"].dtype == bool
        for name, array in bundle(k).items():
            np.testing.assert_array_equal(got[name], array)
        assert list(store.get(k, ["mask"])) == ["mask"]  # one array of a bundle, read alone
    assert store.get(2)["map"] is store.memory[2]["map"]  # in memory: the stored arrays themselves
    store.put(0, bundle(5))  # a key stored again: its old file goes
    assert 0 not in store.files and len(list(folder.iterdir())) == 2
    store.discard(1)
    assert 1 not in store and len(list(folder.iterdir())) == 1
    with pytest.raises(KeyError):
        store.get(1)
    store.close()
    assert not folder.exists()


def test_a_plane_that_cannot_be_written_stays_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "free_bytes", lambda folder: 0)  # the disk is full
    store = PlaneStore(memory_bytes=0, folder=tmp_path)
    for k in range(3):
        store.put(k, bundle(k))
    assert store.unwritable and store.written == 0 and sorted(store.memory) == [0, 1, 2]
    np.testing.assert_array_equal(store.get(0)["map"], bundle(0)["map"])
    assert all(not list(f.iterdir()) for f in tmp_path.iterdir())  # nothing half written
    store.close()


def test_a_write_failing_half_way_leaves_no_file_and_keeps_the_planes(tmp_path, monkeypatch):
    def fails_half_way(fh, **arrays):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", fails_half_way)
    store = PlaneStore(memory_bytes=0, folder=tmp_path)
    store.put(0, bundle(0))
    store.put(1, bundle(1))
    assert store.unwritable and sorted(store.memory) == [0, 1] and list(store.folder.iterdir()) == []
    store.close()


def test_an_explanation_reads_back_whole_and_one_map_at_a_time(tmp_path):
    rng = np.random.default_rng(3)
    plane = lambda: rng.random((6, 5), dtype=np.float32)  # noqa: E731
    made = {k: Explanation(saliency=plane(), raw=plane(), method="layers", settings={"method": "layers"},
                           n_evaluations=k, seconds=0.1, roi=plane() > 0.3, roi_source="box", reference=plane() > 0.5,
                           metrics={"evidence": True}, components={"stage 1": plane(), "stage 2": plane()},
                           target=plane() > 0.6 if k else None)
            for k in (4, 5)}
    slices = ExplanationSlices(PlaneStore(memory_bytes=0, folder=tmp_path), "layers")
    for k, e in made.items():
        slices[k] = e
    assert len(slices) == 2 and slices.components() == ["stage 1", "stage 2"]
    for k, e in made.items():
        back = slices[k]
        assert (back.method, back.n_evaluations, back.metrics, list(back.components)) == \
               (e.method, e.n_evaluations, e.metrics, list(e.components))
        for name in ("saliency", "raw", "roi", "reference"):
            np.testing.assert_array_equal(getattr(back, name), getattr(e, name))
            np.testing.assert_array_equal(slices.plane(k, name), getattr(e, name))
        np.testing.assert_array_equal(back.components["stage 2"], e.components["stage 2"])
        assert (back.target is None) == (e.target is None) and slices.light(k).saliency is None
    assert slices.plane(4, "nothing") is None
    volumes = PlaneVolumes((7, 6, 5), 0, slices.components, slices.planes)
    assert sorted(volumes) == ["stage 1", "stage 2"]
    vol = volumes["stage 1"]
    np.testing.assert_array_equal(vol[5], made[5].components["stage 1"])
    assert not vol[[0, 1, 2, 3, 6]].any()
    images = StoredSlices(slices.store, "image")
    images[4] = plane()
    assert list(images) == [4] and images[4].shape == (6, 5)
    slices.store.close()


def run_and_write(tmp_path, name, progress=None):
    """Three slices of a toy explained by occlusion and layer maps, written to ``tmp_path/name``."""
    session = Session(toy_volume([0.2, 0.3, 0.25]), MarkedSquareToy(), SegmentConfig(orientation="array"))
    seg = session.segment(BoxPrompt((0, 8, 18), (2, 47, 57)), name="toy")
    run = session.explain(seg, [make_explainer("occlusion", patch=8, stride=4, grid="image", metric_steps=2),
                                make_explainer("layers", metric_steps=2)], roi=RoiConfig("box", margin=10),
                          progress=progress)
    return run, run.write(tmp_path / name)


def timeless(doc):
    """A JSON document without its clock readings (seconds, dates)."""
    if isinstance(doc, dict):
        return {k: timeless(v) for k, v in doc.items() if not any(w in k for w in ("seconds", "time", "date", "created"))}
    return [timeless(v) for v in doc] if isinstance(doc, list) else doc


def contents(path: Path):
    if path.suffix == ".json":
        import json

        return timeless(json.loads(path.read_text()))
    if path.suffix == ".png":
        import cv2

        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_a_run_with_every_plane_on_disk_writes_the_same_files(tmp_path, monkeypatch):
    monkeypatch.setenv("XAISEG_CACHE", str(tmp_path / "cache"))
    kept, kept_files = run_and_write(tmp_path, "memory")
    assert kept.store.written == 0  # a few toy slices stay in memory
    monkeypatch.setattr(plane_store, "MEMORY_BYTES", 0)
    spilled, spilled_files = run_and_write(tmp_path, "disk")
    assert spilled.store.written > 0 and len(spilled.store.memory) == 1  # all but the newest went to disk
    assert sorted(kept_files) == sorted(spilled_files)
    assert {"layers_embed_saliency", "layers_layers_png_2", "occlusion_raw"} <= set(kept_files)  # layer maps too
    for key, path in kept_files.items():
        a, b = contents(Path(path)), contents(Path(spilled_files[key]))
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=key)
        else:
            assert a == b
    for name in ("occlusion", "layers"):
        np.testing.assert_array_equal(spilled.saliency[name], kept.saliency[name])
        np.testing.assert_array_equal(spilled.raw(name), kept.raw(name))
    folder = spilled.store.folder
    assert folder.is_dir()
    spilled.close()
    assert not folder.exists()
    again, _ = run_and_write(tmp_path, "dropped")
    folder = again.store.folder
    del again
    gc.collect()
    assert not folder.exists()  # a run dropped without close removes its folder too


def test_a_cancelled_run_leaves_no_planes_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("XAISEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(plane_store, "MEMORY_BYTES", 0)
    token = CancelToken()

    def on_event(event):
        if event["event"] == "stage" and event["stage"].endswith("metrics"):  # pass 3, planes on disk by now
            token.cancel()

    with pytest.raises(errors.Cancelled):
        run_and_write(tmp_path, "cancelled", CallbackProgress(on_event, token))
    planes = tmp_path / "cache" / "planes"
    assert planes.is_dir() and list(planes.iterdir()) == []
    assert not (tmp_path / "cancelled").exists()


def test_the_store_replay_of_the_memory_benchmark_spills_beyond_its_bound():
    from xaiseg.bench_memory import store_replay

    spilled = store_replay(slices=3, side=16, memory_bytes=0)
    kept = store_replay(slices=3, side=16, memory_bytes=1 << 30)
    # with no memory every put but the newest goes to disk: 3 passes x 2 methods x 3 slices + images and logits
    assert spilled["bundles_written"] >= 3 * 2 * 3 and kept["bundles_written"] == 0

"""Activation caches kept from attribution (pass 1) to the Dice drop after scaling (pass 3): the
newest in memory, older ones in files that read back to the same cache, a private folder removed
when the run ends or is cancelled, and a cache that cannot be kept (disk full, a failed write)
dropped without a half-written file and without changing a figure."""
import os
from pathlib import Path

import numpy as np
import pytest

from toys import SquareEvidence, evidence_image
from xaiseg import errors, kept_caches, spill
from xaiseg.explain import make_explainer
from xaiseg.kept_caches import KeptCaches
from xaiseg.pipeline import SegmentConfig, Session
from xaiseg.progress import CallbackProgress, CancelToken
from xaiseg.roi import RoiConfig
from xaiseg.volume import BoxPrompt

FINE = dict(patch=16, stride=8, grid="image", metric_steps=0)


class ReusingSquare(SquareEvidence):
    """The square-evidence toy declaring activation reuse: its cache is the base one (the embedding),
    its changed passes full ones, so the volume pipeline builds, keeps and hands back caches."""

    supports_reuse = True


def made(model, n):
    return [model.embed_cache(evidence_image(seed=k)) for k in range(n)]


def same_cache(a, b):
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.embedding.features, b.embedding.features)
    assert a.owner == b.owner and a.embedding.image_shape == b.embedding.image_shape


def test_the_newest_stay_in_memory_and_older_ones_come_back_from_files(tmp_path):
    model = ReusingSquare()
    caches = made(model, 3)
    kept = KeptCaches(model, memory_bytes=caches[0].nbytes, folder=str(tmp_path))
    for k, c in enumerate(caches):
        kept.put(k, c)
    assert list(kept.memory) == [2] and sorted(kept.files) == [0, 1]
    folder = kept.folder
    assert folder.parent == tmp_path and sorted(p.name for p in folder.iterdir()) == ["slice0.pt", "slice1.pt"]
    same_cache(kept.take(0), caches[0])
    assert not (folder / "slice0.pt").exists() and kept.take(0) is None  # handed out once
    assert kept.take(2) is caches[2]
    kept.close()
    assert not folder.exists() and kept.take(1) is None


def test_a_cache_that_cannot_be_kept_is_dropped_and_nothing_half_written_remains(tmp_path, monkeypatch):
    model = ReusingSquare()
    caches = made(model, 2)
    with monkeypatch.context() as m:
        m.setattr(spill, "free_bytes", lambda folder: 0)  # the disk is full
        with KeptCaches(model, memory_bytes=0, folder=str(tmp_path)) as kept:
            kept.put(0, caches[0])
            kept.put(1, caches[1])
            assert kept.dropped == 1 and kept.take(0) is None and kept.take(1) is caches[1]

    def fails_half_way(cache, path):
        Path(path).write_bytes(b"half a cache")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model, "save_cache", fails_half_way)
    with KeptCaches(model, memory_bytes=0, folder=str(tmp_path)) as kept:
        kept.put(0, caches[0])
        kept.put(1, caches[1])
        assert kept.dropped == 1 and kept.take(0) is None and list(kept.folder.iterdir()) == []
    assert list(tmp_path.iterdir()) == []


def test_a_cache_from_another_segmenter_is_refused(tmp_path):
    a, b = ReusingSquare(), ReusingSquare()
    a.save_cache(a.embed_cache(evidence_image()), tmp_path / "c.pt")
    same_cache(a.load_cache(tmp_path / "c.pt"), a.embed_cache(evidence_image()))
    with pytest.raises(errors.InputError, match="another segmenter"):
        b.load_cache(tmp_path / "c.pt")


def toy_volume_run(monkeypatch, tmp_path, progress=None):
    """Three toy slices explained with every cache but the newest sent to disk; the temporary
    folder lives in ``tmp_path``, the cache folder.  Returns the run and how often caches were built and read back."""
    from test_trust import toy_volume

    monkeypatch.setattr(kept_caches, "MEMORY_BYTES", 0)
    monkeypatch.setenv("XAISEG_CACHE", str(tmp_path))
    model = ReusingSquare()
    calls = {"built": 0, "loaded": 0}
    build, load = model.embed_cache, model.load_cache

    def built(image):
        calls["built"] += 1
        return build(image)

    def loaded(path):
        calls["loaded"] += 1
        return load(path)

    model.embed_cache, model.load_cache = built, loaded
    session = Session(toy_volume([0.9, 0.7, 0.9]), model, SegmentConfig(orientation="array"))
    seg = session.segment(BoxPrompt((0, 36, 36), (2, 55, 55)), name="toy")
    run = session.explain(seg, [make_explainer("occlusion", **FINE)], roi=RoiConfig("box", margin=40),
                          progress=progress)
    return run, calls


def test_a_volume_run_keeps_each_cache_for_the_dice_drop_and_removes_its_folder(tmp_path, monkeypatch):
    run, calls = toy_volume_run(monkeypatch, tmp_path)
    metrics = [run.explanations["occlusion"][k].metrics for k in range(3)]
    assert all(m["evidence"] for m in metrics) and all(m["dice_drop"] > 0 for m in metrics)
    # one cache per slice, never rebuilt; the two older ones were read back from disk for pass 3
    assert calls == {"built": 3, "loaded": 2}
    assert list((tmp_path / "activations").iterdir()) == []
    # the same figures when no cache can be kept (pass 3 then makes full passes)
    monkeypatch.setattr(spill, "free_bytes", lambda folder: 0)
    again, calls = toy_volume_run(monkeypatch, tmp_path)
    assert calls == {"built": 3, "loaded": 0}
    for k in range(3):
        assert again.explanations["occlusion"][k].metrics["dice_drop"] == pytest.approx(metrics[k]["dice_drop"])


def test_a_run_cancelled_after_caches_went_to_disk_removes_them(tmp_path, monkeypatch):
    token = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event)
        if event["event"] == "stage" and event["stage"].endswith("metrics"):  # pass 3's first Dice drop
            token.cancel()

    with pytest.raises(errors.Cancelled):
        toy_volume_run(monkeypatch, tmp_path, CallbackProgress(on_event, token))
    assert any(e["stage"].endswith("metrics") for e in seen)
    assert list((tmp_path / "activations").iterdir()) == []


def test_folders_of_runs_that_were_killed_are_removed(tmp_path):
    model = ReusingSquare()
    mine = spill._prefix()  # run-<this host>-
    dead = tmp_path / f"{mine}999999999-abc"  # no such process on this machine
    live = tmp_path / f"{mine}{os.getpid()}-abc"  # a run of this process, still going
    elsewhere = tmp_path / "run-otherhost-999999999-abc"  # another machine's run (a shared cache folder)
    for folder in (dead, live, elsewhere):
        folder.mkdir()
        (folder / "slice0.pt").write_bytes(b"x")
    with KeptCaches(model, memory_bytes=0, folder=tmp_path) as kept:
        assert not dead.exists() and live.exists() and elsewhere.exists()
        for k, c in enumerate(made(model, 2)):
            kept.put(k, c)
        assert kept.folder.name.startswith(f"{mine}{os.getpid()}-")


def test_a_damaged_file_is_a_cache_lost_not_a_failed_run(tmp_path):
    model = ReusingSquare()
    with KeptCaches(model, memory_bytes=0, folder=tmp_path) as kept:
        for k, c in enumerate(made(model, 2)):
            kept.put(k, c)
        kept.files[0].write_bytes(b"not a cache")
        assert kept.take(0) is None and kept.dropped == 1 and not (kept.folder / "slice0.pt").exists()


def test_segmentation_keeps_the_caches_the_explanation_then_starts_from(tmp_path, monkeypatch):
    """With ``Session.keep_activations`` (what ``xaiseg explain`` sets when it explains after
    segmenting) segmentation encodes each slice through the activation cache and keeps it; the
    explanation takes those caches instead of encoding each slice again, with the same maps."""
    from test_trust import toy_volume

    monkeypatch.setattr(kept_caches, "MEMORY_BYTES", 0)
    monkeypatch.setenv("XAISEG_CACHE", str(tmp_path))

    saved = []

    def run(keep):
        model = ReusingSquare()
        save = model.save_cache
        model.save_cache = lambda cache, path: (saved.append(keep), save(cache, path))
        session = Session(toy_volume([0.9, 0.7, 0.9]), model, SegmentConfig(orientation="array"))
        if keep:
            assert session.keep_activations()
        seg = session.segment(BoxPrompt((0, 36, 36), (2, 55, 55)), name="toy")
        after_segmenting = model.embed_calls
        out = session.explain(seg, [make_explainer("occlusion", **FINE)], roi=RoiConfig("box", margin=40))
        session.release_activations()
        return out, after_segmenting, model.embed_calls

    kept, seg_kept, total_kept = run(True)
    plain, seg_plain, total_plain = run(False)
    assert seg_kept == seg_plain == 3  # one pass per slice either way
    assert total_plain - total_kept == 3  # without kept caches the explanation encodes each slice again
    # one store serves the run: segmentation writes the two older caches, the explanation none again
    assert saved.count(True) == 2
    for k in range(3):
        np.testing.assert_allclose(kept.explanations["occlusion"][k].raw, plain.explanations["occlusion"][k].raw)
    assert list((tmp_path / "activations").iterdir()) == []


def test_a_segmenter_without_reuse_keeps_nothing():
    from test_trust import toy_volume

    session = Session(toy_volume([0.9]), SquareEvidence(), SegmentConfig(orientation="array"))
    assert not session.keep_activations() and session.volume_segmenter.kept is None

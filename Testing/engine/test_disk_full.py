"""A full disk gives one clear DiskFullError and leaves nothing behind.

The disk is a real, small tmpfs mounted by the test (root only; skipped otherwise).  ITK's NIfTI
writer reports nothing when the disk fills (it leaves a cut file and returns), so the writers
check what they wrote before they rename it into place.
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from xaiseg.diskspace import check_free_space, free_bytes
from xaiseg.errors import DiskFullError
from xaiseg.io import Geometry, Volume, staged, write_text_atomic, write_volume

SIZE = 256 << 10  # the small disk


@contextmanager
def tmpfs(mnt: Path, size: int, options: str = ""):
    """A real tmpfs of ``size`` bytes mounted on ``mnt`` (extra mount ``options``, e.g. nr_inodes=8);
    the test is skipped where that is not allowed (not root, or no mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; this test runs as uid %d" % os.geteuid())
    mnt.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",{options}" if options else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", SIZE) as mnt:
        yield mnt


def big_volume() -> Volume:
    """1.6 MB of noise: too big for the disk, compressed or not."""
    arr = np.random.default_rng(0).random((40, 100, 100)).astype(np.float32)
    return Volume(arr, Geometry.of(sitk.GetImageFromArray(arr)))


def everything(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ["x.nii.gz", "x.nii", "x.nrrd", "x.mha"])
def test_image_bigger_than_the_disk(small_disk, name):
    vol = big_volume()
    outdir = small_disk / "out"
    outdir.mkdir()
    with pytest.raises(DiskFullError) as info:
        write_volume(vol, vol.array, outdir / name)
    msg = str(info.value)
    assert msg.startswith(f"output folder {outdir} is full: writing {name} needs up to")
    assert f"({vol.array.nbytes + (64 << 10)} bytes)" in msg and "nothing was written" in msg
    assert everything(small_disk) == ["out"]


def test_text_bigger_than_the_disk(small_disk):
    with pytest.raises(DiskFullError, match=f"output folder {small_disk} is full: writing run.json"):
        write_text_atomic(small_disk / "run.json", "x" * (2 * SIZE))
    assert everything(small_disk) == []


def test_staged_run_leaves_no_folder(small_disk):
    """A run whose second output does not fit leaves neither the first nor the folders it made."""
    vol = big_volume()
    outdir = small_disk / "runs" / "case1"
    with pytest.raises(DiskFullError, match=f"output folder {outdir} is full: writing x_saliency.nii.gz"):
        with staged(outdir) as stage:
            write_text_atomic(stage / "x_run.json", "{}")
            write_volume(vol, vol.array, stage / "x_saliency.nii.gz")
    assert everything(small_disk) == []


def test_check_free_space_refuses_early(small_disk):
    free = free_bytes(small_disk)
    assert 0 < free <= SIZE
    assert check_free_space(small_disk / "not" / "yet", free // 2) == free  # a folder not made yet
    with pytest.raises(DiskFullError, match=rf"output folder {small_disk}/out has .* free \({free} bytes\); "
                                            rf"this run needs about .* \({10 * SIZE} bytes\)"):
        check_free_space(small_disk / "out", 10 * SIZE)
    assert everything(small_disk) == []


def test_writes_that_fit_still_work(small_disk):
    arr = np.arange(20 * 30 * 40, dtype=np.int16).reshape(20, 30, 40)
    vol = Volume(arr, Geometry.of(sitk.GetImageFromArray(arr)))
    path = write_volume(vol, arr, small_disk / "ok.nii.gz")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), arr)
    assert everything(small_disk) == ["ok.nii.gz"]

"""Each bad input raises its own XAISegError subclass naming the value and what was expected; the
CLI prints one line, exits 2, shows no traceback and writes no file."""
import hashlib

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from xaiseg import errors
from xaiseg.cli import main
from xaiseg.io import read_volume

TOY = ["--model", "torch", "--factory", "toys:ramp", "--class-index", "0"]


def write(tmp_path, array, name="vol.nrrd", spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(array)
    if img.GetDimension() == 3:
        img.SetSpacing(spacing)
    path = tmp_path / name
    sitk.WriteImage(img, str(path))
    return str(path)


def good(tmp_path):
    arr = np.zeros((6, 20, 24), np.float32)
    arr[2:5, 5:12, 6:14] = 100.0
    return write(tmp_path, arr)


def run_cli(capsys, tmp_path, args):
    out = tmp_path / "out"
    code = main(["segment", *args, "-o", str(out), "-q"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("xaiseg: error: "), captured.err
    assert "Traceback" not in captured.err
    assert not out.exists() or not any(out.iterdir())
    return lines[0]


def test_constant_image(tmp_path, capsys):
    path = write(tmp_path, np.full((4, 10, 10), 7.0, np.float32))
    with pytest.raises(errors.EmptyImageError, match="constant .*every voxel is 7.0.*expected an image with contrast"):
        read_volume(path)
    assert "constant" in run_cli(capsys, tmp_path, [path, "--box", "1,1,5,5@1", *TOY])


def test_all_zero_image(tmp_path, capsys):
    path = write(tmp_path, np.zeros((4, 10, 10), np.int16))
    assert "every voxel is 0" in run_cli(capsys, tmp_path, [path, "--box", "1,1,5,5@1", *TOY])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(tmp_path, capsys, bad):
    arr = np.random.default_rng(0).random((4, 10, 10)).astype(np.float32)
    arr[1, 2, 3] = bad
    path = write(tmp_path, arr)
    with pytest.raises(errors.NonFiniteImageError, match="1 NaN or infinite voxel"):
        read_volume(path)
    assert "NaN or infinite" in run_cli(capsys, tmp_path, [path, "--box", "1,1,5,5@1", *TOY])


def test_2d_image_where_3d_is_needed(tmp_path, capsys):
    path = write(tmp_path, np.random.default_rng(0).random((10, 12)).astype(np.float32), "slice.nrrd")
    with pytest.raises(errors.DimensionError, match="2 dimensions .*3D volume is needed"):
        read_volume(path)
    assert "3D volume is needed" in run_cli(capsys, tmp_path, [path, "--box", "1,1,5,5@0", *TOY])


@pytest.mark.parametrize("box,needle", [
    ("30,30,2,40,40,3", "lies outside the volume"),
    ("1,1,1,5,5,1@9", "needs"),  # malformed 2D syntax
    ("30,25,40,50@2", "lies outside the volume"),
    ("1,1,1,5,5", "6 numbers"),
])
def test_bad_boxes(tmp_path, capsys, box, needle):
    line = run_cli(capsys, tmp_path, [good(tmp_path), "--box", box, *TOY])
    assert needle in line or "must be" in line


def test_point_outside(tmp_path, capsys):
    line = run_cli(capsys, tmp_path, [good(tmp_path), "--points", "3,3,50", *TOY])
    assert "point (k, j, i) = (50.0, 3.0, 3.0) lies outside the volume of shape (6, 20, 24)" in line


def test_prompt_count(tmp_path, capsys):
    assert "exactly one prompt" in run_cli(capsys, tmp_path, [good(tmp_path), *TOY])
    assert "exactly one prompt" in run_cli(capsys, tmp_path, [good(tmp_path), "--box", "1,1,4,4@1",
                                                              "--points", "2,2,2", *TOY])


def test_missing_and_unreadable_files(tmp_path, capsys):
    line = run_cli(capsys, tmp_path, [str(tmp_path / "nope.nii.gz"), "--box", "1,1,4,4@1", *TOY])
    assert "nope.nii.gz does not exist" in line
    junk = tmp_path / "junk.nrrd"
    junk.write_text("not an image")
    with pytest.raises(errors.FileFormatError, match="could not be read as an image"):
        read_volume(junk)


def test_unknown_window(tmp_path, capsys):
    line = run_cli(capsys, tmp_path, [good(tmp_path), "--box", "1,1,4,4@1", "--window", "kidney", *TOY])
    assert "'kidney' is unknown" in line and "abdomen" in line


def test_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(errors.WeightsMissingError, match="does not exist"):
        from xaiseg.models.litemedsam import LiteMedSAM
        LiteMedSAM(checkpoint=str(tmp_path / "absent.pth"))
    line = run_cli(capsys, tmp_path, [good(tmp_path), "--box", "1,1,4,4@1", "--model", "medsam",
                                      "--checkpoint", str(tmp_path / "absent.pth")])
    assert "absent.pth does not exist" in line


def test_checkpoint_hash_mismatch_names_both(tmp_path, capsys):
    ckpt = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(3)}, ckpt)
    seen = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    expected = "0" * 64
    line = run_cli(capsys, tmp_path, [good(tmp_path), "--box", "1,1,4,4@1", "--model", "medsam",
                                      "--checkpoint", str(ckpt), "--sha256", expected])
    assert seen in line and expected in line


def test_corrupt_checkpoint(tmp_path):
    from xaiseg.weights import load_state_dict

    ckpt = tmp_path / "bad.pth"
    ckpt.write_bytes(np.random.default_rng(1).bytes(4096))
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    with pytest.raises(errors.WeightsCorruptError, match=sha):
        load_state_dict(ckpt, sha)


def test_litemedsam_refuses_a_swapped_file(tmp_path):
    from xaiseg.models.litemedsam import LITEMEDSAM_SHA256, LiteMedSAM

    other = tmp_path / "lite_medsam.pth"
    torch.save({"x": torch.ones(1)}, other)
    with pytest.raises(errors.WeightsHashError, match=LITEMEDSAM_SHA256):
        LiteMedSAM(checkpoint=str(other), sha256=LITEMEDSAM_SHA256)


def test_slice_prompt_checks():
    from xaiseg.models.base import SlicePrompt

    with pytest.raises(errors.PromptError, match=r"lies outside the image of 10 x 8 pixels"):
        SlicePrompt(box=(20, 20, 30, 30)).check_inside((8, 10))
    with pytest.raises(errors.PromptError, match="x1 < x0"):
        SlicePrompt(box=(5, 1, 2, 4))
    with pytest.raises(errors.PromptError, match="needs a box or at least one point"):
        SlicePrompt()

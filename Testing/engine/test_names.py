"""Output names from any text stay one plain file name inside the output folder."""
from __future__ import annotations

import os

import pytest

from xaiseg.errors import UnsafePathError
from xaiseg.names import MAX_BYTES, MAX_CHARS, inside, safe_name, stem_name

HOSTILE = [
    "../escaped", "../../etc/cron.d/x", "/etc/passwd", "a\\b", "..\\..\\win", "CON", "con.txt", "Com1.nii",
    "LPT9", "aux.", "nul ", "x\x00y", "..", ".", "...", "", "   ", ".hidden", "-rf", "a/../../b",
    "tab\there", "line\nbreak", "\x1b[31mred", "\u202egnp.exe", "name.", "name. . .", "C:\\Windows\\x",
    "~/x", "$HOME", "a" * 300, "\u00e9" * 300, "\u8133" * 120, "Gehirn \u00e4\u00f6\u00fc",
    "\u0939\u093f\u0928\u094d\u0926\u0940",
    "\udcff\udcfe", "*?<>|\"", None,
]


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(t)[:30] for t in HOSTILE])
def test_hostile_names_stay_inside(tmp_path, text):
    outdir = tmp_path / "out"
    outdir.mkdir()
    name = safe_name(text)
    assert name == safe_name(text), "not deterministic"
    assert name and name not in (".", "..")
    assert not name.startswith((".", "-")) and not name.endswith((".", " "))
    assert not any(c in name for c in "/\\\x00\n\t\x1b:*?<>|\"")
    assert len(name) <= MAX_CHARS and len(name.encode("utf-8")) <= MAX_BYTES
    assert name.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                                              *(f"LPT{i}" for i in range(10))}
    for filename in (name, f"{name}_mask.nrrd", f"{name}_occlusion_layer3_saliency.nii.gz"):
        target = inside(outdir, filename)
        target.write_text("x")  # the file system takes it, and it lands in the folder
        assert target.parent == outdir.resolve()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_known_answers():
    assert safe_name("../escaped") == "escaped"
    assert safe_name("/etc/passwd") == "etc_passwd"
    assert safe_name("a\\b") == "a_b"
    assert safe_name("CON") == "_CON" and safe_name("com1.txt") == "_com1.txt"
    assert safe_name("x\x00y") == "x_y"
    assert safe_name("..") == "volume" and safe_name("") == "volume" and safe_name(None) == "volume"
    assert safe_name("", fallback="segment") == "segment"
    assert safe_name("", fallback="../bad") == "bad"
    assert safe_name("Gehirn \u00e4\u00f6\u00fc") == "Gehirn_\u00e4\u00f6\u00fc"
    assert safe_name("\u0939\u093f\u0928\u094d\u0926\u0940") == "\u0939\u093f\u0928\u094d\u0926\u0940"  # marks kept
    assert safe_name("left caudate (HO 98)") == "left_caudate_HO_98"
    assert safe_name("case-01_T1.v2") == "case-01_T1.v2"


def test_long_names_are_cut_the_same_way_and_stay_apart():
    a, b = "x" * 300, "x" * 299 + "y"
    assert len(safe_name(a)) == MAX_CHARS and safe_name(a) == safe_name(a)
    assert safe_name(a) != safe_name(b)
    assert safe_name(a)[:80] == "x" * 80


def test_stem_name():
    assert stem_name("/data/case 1.nii.gz") == "case_1"
    assert stem_name("scans/CT.NRRD") == "CT"
    assert stem_name("dicom/series/") == "series"
    assert stem_name("../") == "volume"


def test_inside_refuses_escapes(tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", outdir / "link")
    for bad in ("../escaped_mask.nrrd", "/etc/passwd", "link/x.nrrd", ".", "sub/../../x"):
        with pytest.raises(UnsafePathError, match="outside the output folder"):
            inside(outdir, bad)
    assert inside(outdir, "sub/x.nrrd") == (outdir / "sub" / "x.nrrd").resolve()

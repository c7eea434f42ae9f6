"""A fuzzed front door: generated command lines and worker requests against tiny volumes.

Hypothesis (fixed seed: ``derandomize=True``, bounded example counts) drives the command-line
parser with ``request_from_args`` and the worker's JSON request (``request.parse`` and the worker's
``main``) with a few hundred cases per run.  The cases mix valid values with malformed, hostile and
out-of-range ones, and always keep the expensive settings small, so the whole file takes well
under a minute.  Every case must end in success or in one clear line (the CLI) / one error event
(the worker) with exit status 2 - never a traceback (status 1), never a hang (each case has a time
limit), never a file outside the output folder or a temporary file left in it.  The segmenter is
the real toy ``--model torch --factory toys:ramp``.
"""
from __future__ import annotations

import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from xaiseg import errors  # noqa: E402

from frontdoor import TOY_ARGS, TOY_SEGMENTER, cli, internal, tree, worker, write_labels, write_volume  # noqa: E402

CASE_SECONDS = 60  # a case that runs longer is a hang
FUZZ = dict(derandomize=True, deadline=None, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                   HealthCheck.filter_too_much, HealthCheck.data_too_large])
SHAPE = (3, 32, 32)


class Hang(BaseException):
    """Raised in a case that ran past its time limit (a BaseException, so no handler swallows it)."""


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):  # noqa: ARG001 - signal API
        raise Hang(f"the case ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def place():
    """The inputs of every case, in a folder of their own; the output folder beside them."""
    root = Path(tempfile.mkdtemp(prefix="xaiseg-fuzz-"))
    files = {"good": write_volume(root / "in" / "good.nrrd", SHAPE), "labels": write_labels(root / "in" / "lab.nrrd",
                                                                                              SHAPE),
             "missing": root / "in" / "missing.nii.gz", "empty": root / "in" / "empty"}
    files["empty"].mkdir()
    nan = np.random.default_rng(1).random(SHAPE).astype(np.float32)
    nan[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(root / "in" / "nan.nii.gz"))
    files["nan"] = root / "in" / "nan.nii.gz"
    data = (root / "in" / "nan.nii.gz").read_bytes()
    (root / "in" / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    files["cut"] = root / "in" / "cut.nii.gz"
    (root / "req").mkdir()
    yield root, {k: str(v) for k, v in files.items()}
    shutil.rmtree(root, ignore_errors=True)


def _check_case(root: Path, before, code, ok_codes=(0, 2)) -> None:
    """The case's files: nothing new outside the output folder, nothing internal inside it."""
    out = root / "out"
    outside = {k: v for k, v in tree(root).items() if not k.startswith("out/") and k != "out/"}
    assert outside == before, sorted(set(outside) ^ set(before))
    if out.exists():
        names = list(tree(out))
        assert internal(names) == [], names
        assert code == 0 or names == [], (code, names)  # a refused run writes nothing
        shutil.rmtree(out)
    assert code in ok_codes


# -- the command line ---------------------------------------------------------------------------------

def _coords(n: int, lo: int = -3, hi: int = 34):
    return st.lists(st.integers(lo, hi), min_size=n, max_size=n).map(lambda v: ",".join(map(str, v)))


def _prompt(files, valid: bool):
    good = st.one_of(st.just(["--box=2,2,0,20,20,2"]), st.just(["--box=4,4,1,28,28,1"]),
                     st.lists(_coords(3, 0, 2).map(lambda c: "8,8," + c.split(",")[2]), min_size=1, max_size=2).map(
                         lambda ps: ["--points=" + ";".join(ps)]),
                     st.just(["--box-from", files["labels"], "--label", "1"]))
    if valid:
        return good
    return st.one_of(
        good, _coords(6).map(lambda c: [f"--box={c}"]),
        st.tuples(_coords(4), st.integers(-1, 4)).map(lambda t: [f"--box={t[0]}@{t[1]}"]),
        st.lists(_coords(3), min_size=1, max_size=3).map(lambda ps: ["--points=" + ";".join(ps)]),
        st.tuples(st.sampled_from(["labels", "missing", "good"]), st.sampled_from(["-1", "0", "1", "3", "x"])).map(
            lambda t: ["--box-from", files[t[0]], "--label", t[1]]),
        st.text(max_size=10).map(lambda t: [f"--box={t}"]),
        st.just([]), st.just(["--box=2,2,0,20,20,2", "--points=1,1,1"]))


HOSTILE = ["../escaped", "/etc/passwd", "a/../../b", "..", ".hidden", "CON", "x\x00y", "\u202e", "a" * 300]
BAD_NUMBERS = ["", "x", "1e9", "nan", "3.5", "1,2", "-1"]
#: option -> (values that should work, values that should not); "@name" is the input file of that name
SEGMENT_OPTIONS = {
    "--axis": (["axial", "coronal", "sagittal", "0", "1", "2"], ["3", "oblique"]),
    "--margin": (["0", "2"], BAD_NUMBERS), "--box-margin": (["0", "1"], BAD_NUMBERS),
    "--slice-range": (["0-2", "1-1"], ["2-0", "5-9", "x", "-1-2", "1-"]),
    "--format": (["nrrd", "nifti", "mha"], ["dicom"]), "--threads": (["1"], ["0", "-2", "x", "100000"]),
    "--window": (["brain", "abdomen"], ["kidney"]), "--percentiles": (["1,99", "5,95"], ["99,1", "x", "5,95,7"]),
    "--level-width": (["40,400"], ["x", "40,-1", "1"]),
    "--replace-nonfinite": (["0", "-1"], ["nan", "inf", "x", "1e400"]),
    "--device": (["cpu"], ["cuda", "cuda:3", "meta", "foo", ""]), "--coords": (["ijk"], ["xyz"]),
    "--input-size": (["16", "32"], ["0", "-1", "x", "100000"]), "--in-channels": (["1", "3"], ["0", "x", "100000"]),
    "--class-index": (["0", "2"], ["-1", "x"]),
}
EXPLAIN_OPTIONS = {
    "--method": (["occlusion", "rise", "lime", "shap", "layers", "occlusion,rise"], ["gradcam", "", "all,x"]),
    "--slices": (["1", "0-2", "2,0"], ["99", "-1", "a", ""]),
    "--roi": (["embedding", "box", "mask"], ["clip", "bogus"]), "--roi-margin": (["0", "3"], BAD_NUMBERS),
    "--clip-model": (["@empty"], ["@missing", "nobody/x", "a/b/c"]), "--clip-prompts": (["tumour;liver"], [";"]),
    "--ground-truth": (["@labels"], ["@missing", "@nan", "@cut"]), "--ground-truth-label": (["1"], ["7", "x"]),
    "--roi-mask": (["@labels"], ["@missing"]), "--seed": (["0", "7"], BAD_NUMBERS),
    "--score": (["dice", "logit"], ["iou"]), "--fill": (["auto", "zero", "mean", "blur"], ["noise"]),
    "--threshold": (["0.5", "0.2"], ["0", "1", "nan", "x"]), "--batch-size": (["1", "8"], ["0", "-1"]),
    "--occlusion-grid": (["model", "image"], ["slice"]),
    # --patch is given: 0 means squares, above 1 is refused
    "--occlusion-aspect": (["0", "1"], ["0.5", "11", "nan", "x"]),
    "--occlusion-shifts": (["1"], ["0", "5", "x", "2"]),  # 2 is refused with --patch
    "--occlusion-removal": (["whole", "roi"], ["inside"]),
    "--cells": (["3", "5"], ["0", "x"]),
    "--keep-probability": (["0.5", "0.3"], ["0", "2", "x"]), "--cell-aspect": (["1", "3"], ["0.5", "11", "nan", "x"]),
    "--keep-strata": (["1", "5"], ["0", "21", "x"]), "--rise-reliability": (["0.9", "0.5"], ["0", "2", "x"]), "--shap-algorithm": (["kernel", "permutation"], ["x"]),
    "--layer-stage": (["1", "2", "3"], ["4"]), "--layers": (["deep", "all", "blocks"], ["", "nonexistent"]),
    "--narrator": (["template"], ["llava", "openai", "gpt"]), "--llava-model": (["@empty"], ["@missing"]),
    "--openai-base-url": (["http://127.0.0.1:9/v1"], ["ftp://x", "not a url"]),
    "--openai-model": (["llava"], [""]), "--openai-timeout": (["2"], ["0", "x"]),
    "--max-new-tokens": (["4"], ["0", "x"]), "--labels": (["@labels"], ["@missing"]),
    "--label-names": (["@missing"], ["@labels"]), "--atlas": (["harvard-oxford"], ["aal"]),
    "--atlas-threshold": (["25"], ["-5", "120", "x"]),
}
#: settings that make a run expensive: always given, small (or malformed)
COST = {"--patch": (["16", "32"], ["0", "-4", "x"]), "--stride": (["16", "32"], ["0"]),
        "--masks": (["2", "12"], ["0", "x"]), "--samples": (["2", "10"], ["1"]),
        "--shap-budget": (["4", "8"], ["3"]), "--metric-steps": (["0", "2"], ["1", "x"])}


def _value(files, good, bad, valid: bool):
    values = good if valid else good + bad
    return st.sampled_from(values).map(lambda v: files[v[1:]] if v.startswith("@") else v)


def _options(files, explain: bool, valid: bool):
    table = dict(SEGMENT_OPTIONS, **(EXPLAIN_OPTIONS if explain else {}))
    name = st.one_of(st.text(max_size=16), st.sampled_from(HOSTILE))  # any name is valid: it is sanitised
    chosen = st.lists(st.sampled_from(sorted(table)), max_size=5, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _value(files, *table[k], valid) for k in keys}))
    flags = ["--allow-gaps", "--clahe"] + (["--no-png", "--report", "--sanity", "--no-early-stop"] if explain else [])
    return st.tuples(chosen, st.lists(st.sampled_from(flags), max_size=2, unique=True), name)


@st.composite
def command_lines(draw, files):
    """A command line: about half of them well-formed (to reach the runs), the rest with bad parts."""
    valid = draw(st.booleans())
    command = draw(st.sampled_from(["segment", "explain", "explain"]))
    explain = command == "explain"
    sources = ["good"] if valid else ["good", "good", "labels", "nan", "cut", "missing", "empty"]
    argv = [command, files[draw(st.sampled_from(sources))], *draw(_prompt(files, valid))]
    if explain:
        for key, (good, bad) in COST.items():
            argv.append(f"{key}={draw(_value(files, good, bad, valid))}")
    options, flags, name = draw(_options(files, explain, valid))
    argv += [f"{k}={v}" for k, v in options.items()] + flags
    if draw(st.booleans()):
        argv.append(f"--name={name}")
    if not valid:
        argv += draw(st.lists(st.text(max_size=6), max_size=1))  # now and then a stray word
    return argv + TOY_ARGS + ["-q", "-o", "{out}"]


@given(data=st.data())
@settings(max_examples=120, **FUZZ)
def test_fuzzed_command_lines(place, capfd, data):
    root, files = place
    argv = [a.replace("{out}", str(root / "out")) for a in data.draw(command_lines(files), label="argv")]
    before = tree(root)
    with time_limit(CASE_SECONDS):
        code, lines = cli(argv, capfd)
    event(f"exit {code}" + (f": {lines[0].split(': error: ')[-1][:40]}" if code else ""))
    if code != 0:
        assert len(lines) == 1 and ": error: " in lines[0], (code, lines)
    assert not any("Traceback" in line for line in lines)
    _check_case(root, before, code)


# -- the worker's request -------------------------------------------------------------------------------

JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10 ** 6, 10 ** 6), st.floats(),
                              st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=3),
                                            st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)
SMALL = {"occlusion": {"patch": 16, "stride": 16}, "rise": {"n_masks": 12}, "lime": {"n_samples": 10},
         "shap": {"budget": 8}, "layers": {}}  # settings that keep each method cheap


def _triple(lo=-3, hi=34):
    return st.lists(st.one_of(st.integers(lo, hi), st.floats(lo, hi)), min_size=3, max_size=3)


def _prompts(files, valid: bool):
    good = st.one_of(
        st.just({"type": "box", "lo_kji": [0, 2, 2], "hi_kji": [2, 20, 20]}),
        st.fixed_dictionaries({"type": st.just("box"), "lo_kji": st.tuples(st.integers(0, 2), _triple(0, 12)).map(
            lambda t: [t[0]] + t[1][:2]), "hi_kji": st.tuples(st.integers(0, 2), _triple(12, 31)).map(
            lambda t: [t[0]] + t[1][:2])}),
        st.fixed_dictionaries({"type": st.just("slice_box"), "box": st.just([4, 4, 20, 20]),
                               "slice": st.integers(0, 2)}),
        st.fixed_dictionaries({"type": st.just("points"), "points_kji": st.lists(
            st.tuples(st.integers(0, 2), st.integers(8, 24), st.integers(8, 24)).map(list), min_size=1, max_size=3)}),
        st.fixed_dictionaries({"type": st.just("labelmap"), "file": st.just(files["labels"])},
                              optional={"label": st.just(1), "margin": st.integers(0, 3)}))
    if valid:
        return good
    return st.one_of(
        good, st.fixed_dictionaries({"type": st.just("box"), "lo_kji": _triple(), "hi_kji": _triple()}),
        st.fixed_dictionaries({"type": st.just("box"), "lo_ras": _triple(), "hi_ras": _triple()}),
        st.fixed_dictionaries({"type": st.just("slice_box"), "box": st.lists(st.integers(-3, 34), min_size=4,
                                                                              max_size=4),
                               "slice": st.integers(-1, 4)}),
        st.fixed_dictionaries({"type": st.just("points"), "points_kji": st.lists(_triple(), min_size=1, max_size=3)},
                              optional={"labels": st.one_of(st.lists(st.integers(-1, 2), max_size=3), JSON)}),
        st.fixed_dictionaries({"type": st.just("labelmap"), "file": st.sampled_from([files["labels"],
                                                                                     files["missing"]])},
                              optional={"label": JSON | st.integers(-1, 3), "margin": JSON | st.integers(-3, 3)}),
        JSON)


def _methods(valid: bool):
    good = st.sampled_from(sorted(SMALL)).map(lambda name: {"name": name, "settings": dict(SMALL[name])})
    if valid:
        return st.lists(good, min_size=1, max_size=2)
    one = st.sampled_from(sorted(SMALL) + ["gradcam"]).flatmap(lambda name: st.fixed_dictionaries(
        {"name": st.just(name), "settings": st.dictionaries(
            st.sampled_from(["patch", "stride", "n_masks", "budget", "seed", "threshold", "metric_steps", "stage",
                             "bogus"]), JSON | st.integers(-2, 40), max_size=2).map(
            lambda extra, n=name: dict(SMALL.get(n, {}), **extra))}))
    return st.one_of(st.lists(one, min_size=1, max_size=2), JSON)


def _explain(files, valid: bool):
    if valid:
        return st.fixed_dictionaries({"methods": _methods(True), "common": st.just({"metric_steps": 0})}, optional={
            "roi": st.sampled_from([{"source": s} for s in ("embedding", "box", "mask")]),
            "slices": st.sampled_from([[1], [0, 2], "1-2"]), "target": st.just(files["labels"]),
            "target_label": st.just(1), "roi_mask": st.just(files["labels"]), "pngs": st.booleans(),
            "report": st.sampled_from([None, {}, {"narrator": "template"}])})
    return st.fixed_dictionaries({"methods": _methods(False)}, optional={
        "common": st.dictionaries(st.sampled_from(
            ["metric_steps", "seed", "score", "fill", "threshold", "sanity", "batch_size"]), JSON, max_size=2),
        "roi": st.one_of(st.fixed_dictionaries({"source": st.sampled_from(["embedding", "box", "mask", "clip", "x"])},
                                               optional={"margin": JSON, "clip_model": st.sampled_from(
                                                   [files["empty"], "nobody/x"])}), JSON),
        "slices": st.one_of(st.lists(st.integers(-1, 5), max_size=3), st.sampled_from(["0-2", "1", "x"]), JSON),
        "target": st.sampled_from([files["labels"], files["missing"]]), "target_label": JSON,
        "roi_mask": st.sampled_from([files["labels"], files["missing"]]), "pngs": JSON,
        "report": st.one_of(st.fixed_dictionaries({}, optional={
            "narrator": st.sampled_from(["template", "llava", "openai"]), "llava_model": st.just(files["empty"]),
            "max_new_tokens": JSON, "timeout": JSON, "labels": st.just(files["missing"]), "atlas": JSON}), JSON),
        "bogus": JSON})


@st.composite
def requests(draw, files, out: str):
    """A worker request: about half of them well-formed (to reach the runs), the rest with bad parts."""
    valid = draw(st.booleans())
    data = {"input": files["good"], "output_dir": out, "segmenter": dict(TOY_SEGMENTER),
            "prompt": draw(_prompts(files, True))}
    good = {
        "name": st.one_of(st.text(max_size=16), st.sampled_from(HOSTILE)),
        "axis": st.sampled_from(["axial", "coronal", "sagittal", "0", "2"]), "margin": st.integers(0, 3),
        "slice_range": st.sampled_from([None, [0, 2], "1-2"]), "format": st.sampled_from(["nrrd", "nifti", "mha"]),
        "threads": st.just(1), "allow_gaps": st.booleans(), "replace_nonfinite": st.sampled_from([None, 0, -1.5]),
        "preprocessing": st.sampled_from([{}, {"mode": "window", "window": "brain"}, {"clahe": True}]),
        "explain": _explain(files, True), "prompt": _prompts(files, True),
    }
    bad = {
        "input": st.sampled_from([files[k] for k in ("labels", "nan", "cut", "missing", "empty")]) | JSON,
        "series": JSON, "prompt": _prompts(files, False), "explain": _explain(files, False),
        "segmenter": st.one_of(st.fixed_dictionaries({"device": st.sampled_from(["cuda:2", "x"])}).map(
            lambda d: dict(TOY_SEGMENTER, **d)), st.just(dict(TOY_SEGMENTER, class_index=-1)), JSON),
        "task": st.sampled_from(["calibrate", "x"]) | JSON, "version": st.sampled_from([1, "2"]) | JSON,
        "bogus": JSON, **{k: JSON for k in ("name", "axis", "margin", "slice_range", "format", "threads",
                                            "allow_gaps", "replace_nonfinite", "preprocessing")},
    }
    for key in draw(st.lists(st.sampled_from(sorted(good)), max_size=4, unique=True)):
        data[key] = draw(good[key], label=key)
    if not valid:
        for key in draw(st.lists(st.sampled_from(sorted(bad)), min_size=1, max_size=2, unique=True)):
            data[key] = draw(bad[key], label=key)
        if draw(st.booleans()):
            del data["prompt"]
    return data


@given(data=st.data())
@settings(max_examples=300, **FUZZ)
def test_fuzzed_requests_parse_or_name_the_bad_value(place, data):
    """``request.parse`` on generated JSON: a request, or an XAISegError - nothing else."""
    from xaiseg.request import parse

    root, files = place
    request = data.draw(requests(files, str(root / "out")), label="request")
    try:
        parse(request, root / "req")
        event("parsed")
    except errors.XAISegError as exc:
        event(type(exc).__name__)
        assert str(exc).strip() and "\n" not in str(exc).strip()


@given(data=st.data())
@settings(max_examples=80, **FUZZ)
def test_fuzzed_worker_requests(place, capfd, data):
    root, files = place
    request = data.draw(requests(files, str(root / "out")), label="request")
    if request.get("task") == "calibrate":
        request["repeats"] = 1
    before = tree(root)
    with time_limit(CASE_SECONDS):
        code, events, err = worker(request, root / "req", capfd)
    last = events[-1]
    event(f"exit {code}" + (f": {last.get('error')}" if code else ""))
    assert "Traceback" not in err, err[-3000:]
    if code == 2:
        assert last["event"] == "error" and isinstance(getattr(errors, last["error"], None), type), last
        assert issubclass(getattr(errors, last["error"]), errors.XAISegError), last
    else:
        assert code == 0 and last["event"] == "result", last
    _check_case(root, before, code)

"""``python -m xaiseg.bench_memory -o docs/benchmarks``: peak resident memory of ``xaiseg explain``
on a 512 x 512 x 300 CT (int16, 157 MB) with LiteMedSAM on the CPU.

The CT is a synthetic phantom with a known structure: a noisy soft-tissue body (40 HU, sd 20) in
air, a spine (700 HU) and a bright ellipsoid organ (160 HU).  ``xaiseg explain`` runs in a child
process with a box around the organ on a few slices (occlusion and layers by default); the peak
comes from the child's own accounting (``wait4``'s ``ru_maxrss``), and a sampling thread records
the resident memory over time with the stage the progress bar showed, so a table says where the
peak happened.  ``--before DIR`` first runs the same command with another engine (the
``XAISegExtension`` folder of an older checkout) for a before/after comparison.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .io import write_tables

SHAPE = (300, 512, 512)  # k, j, i
SPACING = (0.8, 0.8, 1.5)  # i, j, k in mm
ORGAN = ((150, 250, 300), (40, 60, 50))  # centre (k, j, i) and radii in voxels
GOAL_MB = 4096


def write_phantom(path: Path, shape: Tuple[int, int, int] = SHAPE, seed: int = 0) -> Path:
    """The phantom CT as an uncompressed NRRD, built slice by slice (the builder stays small)."""
    import SimpleITK as sitk

    rng = np.random.default_rng(seed)
    n, h, w = shape
    jj, ii = np.mgrid[0:h, 0:w].astype(np.float32)
    body = ((jj - h / 2) / (0.42 * h)) ** 2 + ((ii - w / 2) / (0.46 * w)) ** 2 <= 1.0
    spine = ((jj - 0.72 * h) / 18.0) ** 2 + ((ii - w / 2) / 22.0) ** 2 <= 1.0
    (ck, cj, ci), (rk, rj, ri) = ORGAN
    volume = np.empty(shape, np.int16)
    for k in range(n):
        plane = np.full((h, w), -1000.0, np.float32)
        plane[body] = 40.0 + rng.normal(0.0, 20.0, int(body.sum()))
        plane[spine] = 700.0
        organ = ((k - ck) / rk) ** 2 + ((jj - cj) / rj) ** 2 + ((ii - ci) / ri) ** 2 <= 1.0
        plane[organ] = 160.0 + rng.normal(0.0, 10.0, int(organ.sum()))
        volume[k] = np.clip(plane, -1024, 3071).astype(np.int16)
    image = sitk.GetImageFromArray(volume)
    del volume
    image.SetSpacing(SPACING)
    sitk.WriteImage(image, str(path), False)
    return path


def organ_box(slices: int) -> str:
    """``--box`` around the organ (voxel i, j, k) on ``slices`` slices through its centre."""
    (ck, cj, ci), (_, rj, ri) = ORGAN
    k0 = ck - (slices - 1) // 2
    return f"{ci - ri - 4},{cj - rj - 4},{k0},{ci + ri + 4},{cj + rj + 4},{k0 + slices - 1}"


def rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def measure(argv: List[str], engine: Optional[str] = None, interval: float = 0.2) -> Dict:
    """Run ``python -m xaiseg.cli ARGV`` (with ``engine`` first on the path); its peak resident MB,
    seconds, status and the sampled memory per progress stage."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if engine:
        env["PYTHONPATH"] = os.pathsep.join([str(engine)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                              if p])
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "xaiseg.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    stage = {"now": "start", "log": []}
    per_stage: Dict[str, float] = {}
    done = threading.Event()

    def read_progress() -> None:
        buf = b""
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for p in parts:
                text = p.decode("utf-8", "replace").strip()
                stage["log"].append(text)
                m = re.match(r"^(.*?):\s+\d+%", text)
                if m:
                    stage["now"] = re.sub(r"\s*\(\d+/\d+\)", "", re.sub(r"\bslice \d+", "slice", m.group(1)))

    def sample() -> None:
        while not done.is_set():
            mb = rss_mb(proc.pid)
            if mb is not None:
                per_stage[stage["now"]] = max(per_stage.get(stage["now"], 0.0), mb)
            done.wait(interval)

    out_chunks: List[bytes] = []

    def read_output() -> None:  # drained as it comes: a child printing more than the pipe holds must not block
        out_chunks.extend(iter(lambda: proc.stdout.read1(4096), b""))

    threads = [threading.Thread(target=read_progress, daemon=True), threading.Thread(target=sample, daemon=True),
               threading.Thread(target=read_output, daemon=True)]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    done.set()
    for t in threads:
        t.join(5)
    out = b"".join(out_chunks).decode("utf-8", "replace")
    return {"status": proc.returncode, "seconds": round(seconds, 1), "peak_mb": round(usage.ru_maxrss / 1024.0, 1),
            "sampled_peak_mb": round(max(per_stage.values(), default=0.0), 1),
            "per_stage_mb": {k: round(v, 1) for k, v in per_stage.items()}, "stdout": out.strip().splitlines()[-3:],
            "stderr_tail": [line for line in stage["log"] if line][-5:]}


def bench_memory(outdir: Path, slices: int = 3, methods: str = "occlusion,layers", extra: Sequence[str] = (),
                 before: Optional[str] = None, workdir: Optional[Path] = None) -> Dict:
    from .bench_explain import machine

    with tempfile.TemporaryDirectory(prefix="xaiseg-bench-memory-", dir=workdir) as tmp:
        ct = write_phantom(Path(tmp) / "phantom_ct.nrrd")
        argv = ["explain", str(ct), "--box", organ_box(slices), "--method", methods, *extra]
        result: Dict = {"machine": machine("cpu"), "shape_kji": list(SHAPE), "dtype": "int16",
                        "input_mb": round(os.path.getsize(ct) / 2 ** 20, 1), "slices": slices, "methods": methods,
                        "command": "xaiseg " + " ".join(argv[:1] + ["phantom_ct.nrrd"] + argv[2:]) + " -o OUT",
                        "runs": {}}
        engines = ([("before", before)] if before else []) + [("after" if before else "this", None)]
        for label, engine in engines:
            print(f"{label}: running {result['command']}", flush=True)
            run = measure(argv + ["-o", str(Path(tmp) / f"out_{label}")], engine)
            run["engine"] = str(engine) if engine else "this checkout"
            result["runs"][label] = run
            print(f"{label}: peak {run['peak_mb']:.0f} MB in {run['seconds']:.0f} s (status {run['status']})",
                  flush=True)
    write_report(Path(outdir), result)
    return result


def write_report(outdir: Path, result: Dict) -> None:
    md = ["# Peak memory: `xaiseg explain` on a 512 x 512 x 300 CT (LiteMedSAM, CPU)", "",
          f"Produced by `python -m xaiseg.bench_memory` on {result['machine']['platform']}. The input is a "
          f"synthetic int16 CT phantom ({result['input_mb']:.0f} MB; a noisy body, a spine and a bright ellipsoid "
          f"organ), explained with `{result['command']}`; the peak is the child process's maximum resident set "
          f"(`wait4`), the goal under {GOAL_MB} MB.", "",
          "| run | engine | peak resident MB | seconds | status |", "|---|---|---|---|---|"]
    for label, run in result["runs"].items():
        md.append(f"| {label} | {run['engine']} | {run['peak_mb']:.0f} | {run['seconds']:.0f} | {run['status']} |")
    md += ["", "Largest resident memory sampled during each stage of the progress bar (MB):", ""]
    stages = list(dict.fromkeys(s for run in result["runs"].values() for s in run["per_stage_mb"]))
    md += ["| stage | " + " | ".join(result["runs"]) + " |", "|---|" + "---|" * len(result["runs"])]
    for s in stages:
        md.append(f"| {s} | " + " | ".join(f"{run['per_stage_mb'].get(s, 0):.0f}" if s in run["per_stage_mb"]
                                          else "-" for run in result["runs"].values()) + " |")
    md.append("")
    write_tables(outdir, "memory", "\n".join(md), result, indent=1)
    print("\n".join(md))


def store_replay(slices: int = 81, side: int = 512, memory_bytes: Optional[int] = None, seed: int = 0) -> Dict:
    """Seconds the plane store (:mod:`xaiseg.plane_store`) spends on a whole structure's planes: the
    puts and reads of a run with occlusion and the layer maps (18 components) on ``slices`` slices of
    ``side`` x ``side``, replayed without the model, with the store's memory bound and with everything
    in memory.  Returns both seconds and the bundles written to disk."""
    from .explain.base import Explanation
    from .plane_store import MEMORY_BYTES, ExplanationSlices, PlaneStore, StoredSlices

    rng = np.random.default_rng(seed)

    def plane():
        return rng.random((side, side), dtype=np.float32)

    def made(parts: int) -> Explanation:
        return Explanation(saliency=plane(), raw=plane(), method="m", settings={}, n_evaluations=1, seconds=0.0,
                           roi=plane() > 0.5, roi_source="box", reference=plane() > 0.5,
                           components={f"layer {i}": plane() for i in range(parts)})

    runs = {k: (made(0), made(18)) for k in range(slices)}

    def replay(bound: int) -> Tuple[float, int]:
        with tempfile.TemporaryDirectory(prefix="xaiseg-store-replay-") as tmp:
            store = PlaneStore(memory_bytes=bound, folder=tmp)
            methods = (ExplanationSlices(store, "occlusion"), ExplanationSlices(store, "layers"))
            logits, images = StoredSlices(store, "logits"), StoredSlices(store, "image")
            t = time.perf_counter()
            for k, (occlusion, layers) in runs.items():  # pass 1
                logits[k], images[k] = occlusion.raw, occlusion.raw.astype(np.int16)
                methods[0][k], methods[1][k] = occlusion, layers
            for per_slice in methods:  # pass 2: the structure's scale, then each display map
                max(float(per_slice.plane(k, "raw")[per_slice.plane(k, "roi")].max()) for k in per_slice)
                for k in per_slice:
                    per_slice[k] = per_slice[k]
            for k in runs:  # pass 3
                logits.pop(k)
                for per_slice in methods:
                    per_slice[k] = per_slice[k]
            for per_slice in methods:  # writing: each volume's planes, then each slice's PNGs
                for name in ["saliency", "raw"] + per_slice.components():
                    for _ in per_slice.planes(name):
                        pass
                for k in per_slice:
                    per_slice[k], images[k]
            seconds = time.perf_counter() - t
            store.close()
            return seconds, store.written

    bound = MEMORY_BYTES if memory_bytes is None else memory_bytes
    (kept, written), (in_memory, _) = replay(bound), replay(1 << 62)
    return {"slices": slices, "side": side, "memory_bytes": bound, "seconds": round(kept, 2),
            "seconds_in_memory": round(in_memory, 2), "bundles_written": written}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xaiseg.bench_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default="docs/benchmarks", help="folder for memory.md/.json")
    p.add_argument("--slices", type=int, default=3, help="slices segmented and explained (default 3)")
    p.add_argument("--method", default="occlusion,layers", help="methods (default occlusion,layers)")
    p.add_argument("--before", metavar="DIR", help="first run the same command with the engine in DIR (the "
                                                   "XAISegExtension folder of another checkout)")
    p.add_argument("--workdir", help="folder for the phantom and the outputs (default: the system's temporary folder)")
    p.add_argument("--store-replay", action="store_true", help="only time the plane store on --slices slices of "
                                                                  "512 x 512 (no model; prints the seconds)")
    p.add_argument("extra", nargs="*", help="more `xaiseg explain` options after --, e.g. -- --metric-steps 0")
    a = p.parse_args(argv)
    if a.store_replay:
        print(store_replay(a.slices))
        return 0
    result = bench_memory(Path(a.output), a.slices, a.method, a.extra, a.before,
                          Path(a.workdir) if a.workdir else None)
    return 0 if all(r["status"] == 0 for r in result["runs"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

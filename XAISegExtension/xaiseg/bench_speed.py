"""`xaiseg bench speed`: what one LiteMedSAM encoder pass costs, by batch size, and what a perturbed
pass costs with activation reuse, on a real MNI152 slice (the axial slice through the middle of
the left caudate, 218 x 182 pixels).

Everything runs in one process, the variants interleaved round by round (the order alternates),
and the tables quote medians, so a machine whose speed drifts (a shared CPU) still gives fair
ratios.  ``python -m xaiseg.bench_speed -o docs/benchmarks`` writes ``speed.md`` and ``speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .io import write_tables, write_text_atomic

BATCHES = (1, 2, 4, 8)
ROI_SIDE = 40  # slice pixels: a structure-sized box (RISE or a deletion curve restricted to the ROI)


def _say(text: str) -> None:
    import sys

    print(f"[bench speed] {text}", file=sys.stderr, flush=True)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(variants: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, List[float]]:
    """Seconds of each variant per round; the order rotates and reverses from round to round."""
    names = list(variants)
    out: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        if r % 2:
            order = order[::-1]
        for n in order:
            out[n].append(_timed(variants[n]))
    return out


def caudate_slice(segmenter):
    """The MNI152 axial slice through the middle of the left caudate (preprocessed as the pipeline
    does), the caudate's box as the prompt, and the caudate's centre."""
    from .models.base import SlicePrompt
    from .pipeline import Session
    from .sample_data import load_mni_atlas

    sample = load_mni_atlas(["Left_Caudate"])
    truth = sample.mask("Left_Caudate")
    k = int(np.median(np.unique(np.nonzero(truth)[0])))
    image = Session(sample.image, segmenter).volume_segmenter.slice(k).astype(np.float32)
    rows, cols = np.nonzero(truth[k])
    prompt = SlicePrompt((float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())))
    return k, image, prompt, (int(rows.mean()), int(cols.mean()))


def centred_box(centre, side: int, shape) -> tuple:
    y0 = min(max(0, centre[0] - side // 2), shape[0] - side)
    x0 = min(max(0, centre[1] - side // 2), shape[1] - side)
    return (y0, x0, y0 + side, x0 + side)


def batch_rows(segmenter, image: np.ndarray, rounds: int, threads: Sequence[int]) -> List[Dict]:
    """Seconds per image of full encoder passes in batches of 1, 2, 4, 8, with each number of torch
    threads in ``threads`` (all interleaved); relative to batch 1 with the same threads."""
    import torch

    def run(n, b):
        torch.set_num_threads(n)
        segmenter.embed_batch([image] * b)

    variants = {(n, b): (lambda n=n, b=b: run(n, b)) for n in threads for b in BATCHES}
    times = interleaved(variants, rounds)
    rows = []
    for n in threads:
        base = statistics.median(times[(n, 1)])
        rows += [{"threads": n, "batch": b, "s_per_image": statistics.median(times[(n, b)]) / b,
                  "relative_to_batch_1": statistics.median(times[(n, b)]) / b / base,
                  "rounds_s": [round(t, 3) for t in times[(n, b)]]} for b in BATCHES]
    return rows


def reuse_rows(segmenter, image: np.ndarray, cache, cases: Dict[str, tuple], rounds: int) -> List[Dict]:
    """A perturbed pass with reuse against a full pass, per changed box (the box set to 0)."""
    rows = []
    for label, box in cases.items():
        y0, x0, y1, x1 = box
        perturbed = image.copy()
        perturbed[y0:y1, x0:x1] = 0.0
        full = segmenter.embed(perturbed).features
        reused = segmenter.embed_changed(cache, perturbed, box)
        scale = float(full.abs().max())
        err = float((reused.features - full).abs().max())
        times = interleaved({"full": lambda p=perturbed: segmenter.embed(p),
                             "reuse": lambda p=perturbed, b=box: segmenter.embed_changed(cache, p, b)}, rounds)
        ratios = [r / f for r, f in zip(times["reuse"], times["full"])]
        rows.append({"case": label, "box": list(box), "side_px": y1 - y0,
                     "full_s": statistics.median(times["full"]), "reuse_s": statistics.median(times["reuse"]),
                     "ratio": statistics.median(ratios), "estimated_share": round(reused.pass_share, 3),
                     "rounds_full_s": [round(t, 3) for t in times["full"]],
                     "rounds_reuse_s": [round(t, 3) for t in times["reuse"]],
                     "max_error_relative": err / scale})
    return rows


def reuse_batch_rows(segmenter, image: np.ndarray, cache, box: tuple, rounds: int) -> List[Dict]:
    """Seconds per image of reused passes of two neighbouring patches (``box`` and ``box`` shifted by
    its side), one call each (batch 1) or one call together (batch 2, their union recomputed)."""
    y0, x0, y1, x1 = box
    side = x1 - x0
    boxes = [box, (y0, x0 + side, y1, x1 + side)]
    images = []
    for b in boxes:
        im = image.copy()
        im[b[0]:b[2], b[1]:b[3]] = 0.0
        images.append(im)
    times = interleaved({1: lambda: [segmenter.embed_changed(cache, im, b) for im, b in zip(images, boxes)],
                         2: lambda: segmenter.embed_changed_batch(cache, images, boxes)}, rounds)
    base = statistics.median(times[1]) / 2
    return [{"batch": b, "s_per_image": statistics.median(times[b]) / 2,
             "relative_to_batch_1": statistics.median(times[b]) / 2 / base} for b in (1, 2)]


MAP_PATCH = 16  # model-grid pixels, stride the same: a map of a few passes (the structure-sized default
               # on this caudate is 4 px at stride 2, over a hundred passes)


def map_rows(segmenter, image, prompt, cache, rounds: int) -> List[Dict]:
    """A ROI occlusion map (embedding ROI, patch and stride MAP_PATCH on the grid) with and without
    reuse: seconds, passes, and the largest difference between the maps.  With reuse the engine
    builds its own cache (one full pass more) as the volume pipeline's engines do today; "reuse,
    shared cache" is given the slice's cache."""
    from .explain import make_explainer
    from .models.base import without_reuse
    from .roi import RoiConfig, RoiFinder

    embedding = cache.embedding
    mask = segmenter.decode(embedding, prompt.clipped(image.shape)) > 0
    roi, _ = RoiFinder(RoiConfig("embedding")).find(image, prompt, mask, embedding)
    plain = without_reuse(segmenter)
    runs: Dict[str, list] = {"full": [], "reuse": [], "reuse, shared cache": []}

    def run(label, seg, shared):
        ex = make_explainer("occlusion", seg, metric_steps=0, noise_passes=0, patch=MAP_PATCH, stride=MAP_PATCH)
        t0 = time.perf_counter()
        e = ex.explain(image, prompt, roi=roi, embedding=embedding, measure=False,
                       reuse_cache=cache if shared else None)
        runs[label].append((time.perf_counter() - t0, e))

    variants = {"full": lambda: run("full", plain, False), "reuse": lambda: run("reuse", segmenter, False),
                "reuse, shared cache": lambda: run("reuse, shared cache", segmenter, True)}
    interleaved(variants, rounds)
    full_s = statistics.median(t for t, _ in runs["full"])
    reference = runs["full"][0][1].raw
    rows = []
    for label, done in runs.items():
        e = done[0][1]
        rows.append({"variant": label, "seconds": statistics.median(t for t, _ in done),
                     "ratio": statistics.median(t for t, _ in done) / full_s, "passes": e.n_evaluations,
                     "reuse": e.record["reuse"], "patch_px": e.details["patch_px"],
                     "max_map_difference": float(np.abs(e.raw - reference).max()),
                     "maps_allclose": bool(np.allclose(e.raw, reference, atol=1e-6))})
    return rows


def machine_record(device: str) -> Dict:
    import platform

    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "device": device,
            "load_average_start": [round(v, 2) for v in os.getloadavg()]}


def choose_batch(rows: Sequence[Dict]) -> int:
    """The batch size with the lowest seconds per image (ties to the smaller batch within 5 %)."""
    best = min(r["s_per_image"] for r in rows)
    return min(r["batch"] for r in rows if r["s_per_image"] <= 1.05 * best)


def bench_speed(outdir: Path, quick: bool = False, device: str = "cpu", rounds: int = 0,
                threads: Sequence[int] = ()) -> Dict:
    """Measure and write ``speed.md`` / ``speed.json`` into ``outdir``; returns the result.
    ``threads``: torch thread counts for the batch table (default: torch's choice); the reuse and
    map measurements use the first."""
    import torch

    from .explain.occlusion import Occlusion
    from .models.litemedsam import LiteMedSAM
    from .roi.geometry import prompt_box

    threads = [int(n) for n in threads] or [torch.get_num_threads()]
    torch.set_num_threads(threads[0])
    rounds = rounds or (2 if quick else 3)
    t_start = time.perf_counter()
    command = (f"python -m xaiseg.bench_speed -o {outdir}" + (" --quick" if quick else "") + f" --rounds {rounds}" +
               f" --threads {','.join(str(n) for n in threads)}")
    result: Dict = {"machine": dict(machine_record(device), batch_threads=threads), "rounds": rounds, "quick": quick,
                    "command": command}
    segmenter = LiteMedSAM(device=device)
    k, image, prompt, centre = caudate_slice(segmenter)
    cache = segmenter.embed_cache(image)  # also warms the model up
    result["slice"] = {"index": k, "shape": list(image.shape), "prompt_box": list(prompt.box),
                       "cache_mb": round(cache.nbytes / 2 ** 20, 1)}
    _say(f"cache built ({result['slice']['cache_mb']} MB); batch sizes, {rounds} rounds")
    result["batches"] = batch_rows(segmenter, image, rounds, threads)
    torch.set_num_threads(threads[0])
    result["chosen_batch"] = {n: choose_batch([r for r in result["batches"] if r["threads"] == n]) for n in threads}
    occ = Occlusion(segmenter)
    structure_patch = occ.pixel_sizes(image.shape, prompt_box(prompt, None))[0]
    seed_patch = Occlusion(segmenter, patch=64, stride=32).pixel_sizes(image.shape)[0]
    cases = {f"occlusion patch, structure-sized ({structure_patch} px)": centred_box(centre, structure_patch,
                                                                                     image.shape),
             f"ROI-sized box ({ROI_SIDE} x {ROI_SIDE} px)": centred_box(centre, ROI_SIDE, image.shape),
             f"occlusion patch, seed 001's 64 on the grid ({seed_patch} px)": centred_box(centre, seed_patch,
                                                                                         image.shape)}
    _say("reuse against full passes")
    result["reuse"] = reuse_rows(segmenter, image, cache, cases, rounds)
    result["reuse_batches"] = reuse_batch_rows(segmenter, image, cache, centred_box(centre, 2 * structure_patch,
                                                                                   image.shape), rounds)
    _say("occlusion maps")
    result["maps"] = map_rows(segmenter, image, prompt, cache, 1 if quick else 2)
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    write_tables(outdir, "speed", markdown(result), result)
    return result


def markdown(result: Dict) -> str:
    m = result["machine"]
    lines = [
        "# Encoder speed: batch size and activation reuse (LiteMedSAM, CPU)",
        "",
        f"Produced by `{result.get('command', 'python -m xaiseg.bench_speed -o docs/benchmarks')}`" +
        f" on {m['platform']} ({m['processor']}, {m['cpu_count']} cores), torch {m['torch']}, "
        f"{m['threads']} torch thread(s) (batch table: {' and '.join(str(n) for n in m['batch_threads'])}), device "
        f"{m['device']}; load average {m['load_average_start'][0]} at the start, "
        f"{m['load_average_end'][0]} at the end (a shared machine: compare ratios, not seconds).  All variants ran "
        f"in one process, interleaved over {result['rounds']} rounds; figures are medians.",
        "",
        f"Slice: MNI152 axial {result['slice']['index']}, {result['slice']['shape'][0]} x "
        f"{result['slice']['shape'][1]} px (longest side resized to 256, then padded), left caudate box as the "
        f"prompt; the activation cache holds {result['slice']['cache_mb']} MB.",
        "",
        "## Seconds per image by batch size (full passes)",
        "",
        "| torch threads | batch | s per image | relative to batch 1 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['threads']} | {r['batch']} | {r['s_per_image']:.2f} | {r['relative_to_batch_1']:.2f} |"
              for r in result["batches"]]
    chosen = ", ".join(f"batch {b} with {n} thread(s)" for n, b in result["chosen_batch"].items())
    singles = {r["threads"]: r["s_per_image"] for r in result["batches"] if r["batch"] == 1}
    if len(singles) > 1:
        first = next(iter(singles))
        chosen += "; batch 1 with " + ", ".join(f"{n} threads takes {t / singles[first]:.2f} x the time with {first}"
                                                 for n, t in singles.items() if n != first)
    lines += ["", f"Lowest cost per image (within 5 %, the smaller batch on a tie): {chosen}.  The default on a CPU "
              "(`preferred_batch`) is 1.", "",
              "## A perturbed pass with activation reuse against a full pass", "",
              "The perturbed image is the slice with the box set to 0, centred on the caudate.  `ratio` is the "
              "median over rounds of reuse seconds / full seconds; `estimated` is the share the model's cost "
              "table predicts (used to decide when reuse pays); `error` is the largest difference of the "
              "embedding from a full pass's, relative to the embedding's largest magnitude.", "",
              "| change | full s | reuse s | ratio | estimated | error |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['full_s']:.2f} | {r['reuse_s']:.2f} | {r['ratio']:.2f} | "
              f"{r['estimated_share']:.2f} | {r['max_error_relative']:.1e} |" for r in result["reuse"]]
    lines += ["", "Reused passes of two neighbouring patches (twice the structure-sized patch), one call each or "
              "both in one batch of 2 (their union recomputed):", "",
              "| batch | s per image | relative to batch 1 |", "|---|---|---|"]
    lines += [f"| {r['batch']} | {r['s_per_image']:.2f} | {r['relative_to_batch_1']:.2f} |"
              for r in result["reuse_batches"]]
    lines += ["", f"## A whole ROI occlusion map (embedding ROI, patch and stride {MAP_PATCH} on the model grid)", "",
              "| variant | seconds | relative | perturbed passes | reused | cache passes | largest map difference |",
              "|---|---|---|---|---|---|---|"]
    for r in result["maps"]:
        u = r["reuse"]
        lines.append(f"| {r['variant']} | {r['seconds']:.1f} | {r['ratio']:.2f} | {r['passes']} | "
                     f"{u['reused_passes']} | {u['cache_passes']} | {r['max_map_difference']:.1e} |")
    lines += ["", "\"reuse\" builds the slice's activation cache inside the explainer (one full pass more, as the "
              "volume pipeline's engines do when handed only the embedding); \"reuse, shared cache\" is given the "
              "cache the slice already has.", "", f"Total {result['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def rewrite_markdown(outdir: Path) -> str:
    """``speed.md`` again from ``speed.json`` (after a change of wording; the figures are the JSON's)."""
    result = json.loads((Path(outdir) / "speed.json").read_text())
    text = markdown(result)
    write_text_atomic(Path(outdir) / "speed.md", text)
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xaiseg.bench_speed", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--outdir", default="docs/benchmarks", help="where speed.md and speed.json go")
    parser.add_argument("--quick", action="store_true", help="2 rounds and one map run per variant")
    parser.add_argument("--rounds", type=int, default=0, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--threads", default="", help="torch thread counts for the batch table, e.g. 1,2 (default: "
                                                      "torch's choice); the rest uses the first")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    threads = [int(n) for n in str(args.threads).split(",") if n.strip()]
    result = bench_speed(Path(args.outdir), args.quick, args.device, args.rounds, threads)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

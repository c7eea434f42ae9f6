"""`xaiseg bench explain`: ROI occlusion against MONAI's and Captum's full-image occlusion, and RISE
convergence, on real MNI152 slices through the left caudate with LiteMedSAM.

Every method's model evaluations go through the same :class:`PerturbationEngine`, so encoder
passes are counted one way; all runs happen in one process, one after the other, so the time
ratios are comparable even on a shared machine.  Deletion AUC is computed for every map with the
same curve over the same region (the embedding ROI), so a lower value means the map ranks the
pixels the model needs first.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from .io import write_tables, write_text_atomic


def machine(device: str = "cpu") -> Dict:
    """Where a benchmark ran: platform, torch threads, and the accelerator when one was used."""
    import torch

    info = {"platform": platform.platform(), "threads": torch.get_num_threads(), "device": device}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["accelerator"] = torch.cuda.get_device_name(torch.device(device))
    return info


def caudate_slices(sample, count: int) -> List[int]:
    """``count`` axial slices around the middle of the left caudate."""
    mask = sample.mask("Left_Caudate")
    ks = np.unique(np.nonzero(mask)[0])
    mid = int(np.median(ks))
    return sorted(ks[np.argsort(np.abs(ks - mid), kind="stable")[:count]].tolist())


class _Scorer:
    """A torch module that maps images (B, 1, H, W) to the explained score through the engine."""

    def __new__(cls, engine):
        import torch

        class Module(torch.nn.Module):
            def forward(self, x):
                images = [t[0].detach().cpu().numpy() for t in x]
                scores = engine.score_images(images, total=0)
                return torch.as_tensor(scores, dtype=torch.float32)[:, None]

        return Module()


def monai_occlusion(engine, image: np.ndarray, patch: int, stride: int, batch: int) -> np.ndarray:
    """MONAI's OcclusionSensitivity (zero fill, full image) of ``engine``'s score on ``image``, as
    the score lost where each pixel is removed (the engine's baseline minus MONAI's map)."""
    import torch
    from monai.visualize import OcclusionSensitivity

    sens = OcclusionSensitivity(_Scorer(engine), mask_size=patch, n_batch=batch, mode=0.0,
                                overlap=1.0 - stride / patch, activate=False, verbose=False)
    occ_map, _ = sens(torch.from_numpy(image)[None, None])
    return engine.baseline - occ_map[0, 0].detach().numpy()


def slice_setup(session, seg, k: int):
    """Slice ``k`` of a segmentation: image, prompt, cached embedding, mask and embedding ROI."""
    from .explain_volume import slice_prompt as _slice_prompt
    from .roi import RoiConfig, RoiFinder

    vs = session.volume_segmenter  # the slice and its prompt as the model sees them (turned)
    image = vs.model_slice(k)
    prompt = vs.to_model_prompt(_slice_prompt(next(r.prompt for r in seg.slices if r.index == k)))
    embedding, _ = vs.embedding(k)
    mask = session.segmenter.decode(embedding, prompt.clipped(image.shape)) > 0
    region, _ = RoiFinder(RoiConfig("embedding")).find(image, prompt, mask, embedding)
    return image, prompt, embedding, mask, region


def occlusion_rows(session, seg, k: int, steps: int) -> List[Dict]:
    """Ours (box and embedding ROI) against MONAI and Captum on one slice."""
    import torch

    from .explain import make_explainer
    from .explain.base import PerturbationEngine
    from .explain.measure import faithfulness
    from .roi import RoiConfig, RoiFinder

    image, prompt, embedding, mask, region = slice_setup(session, seg, k)
    # scored by removal, as MONAI's and Captum's occlusion are (and as the table was measured before
    # stop 27), with square patches as theirs (not the strips, the default since stop 45): the comparison is of
    # the same method, not of a different score or patch
    occ = make_explainer("occlusion", session.segmenter, metric_steps=0, mode="remove", aspect=1.0)
    p, s = occ.pixel_sizes(image.shape)
    rows = []

    def deletion(saliency):
        engine = PerturbationEngine(session.segmenter, image, prompt, region, embedding=embedding)
        return faithfulness(engine, saliency, steps)["deletion_auc"]

    for label, roi in (("XAISeg ROI occlusion (embedding ROI, the default)", region),
                       ("XAISeg ROI occlusion (box ROI, margin 8)",
                        RoiFinder(RoiConfig("box")).find(image, prompt, mask)[0])):
        t0 = time.perf_counter()
        ex = occ.explain(image, prompt, roi=roi, embedding=embedding)
        # + 1: the Dice-drop check that every explanation runs
        rows.append({"slice": k, "method": label, "encoder_passes": ex.n_evaluations + 1,
                     "seconds": time.perf_counter() - t0, "deletion_auc": deletion(ex.saliency)})

    full = np.ones(image.shape, bool)
    x = torch.from_numpy(image)[None, None]

    engine = PerturbationEngine(session.segmenter, image, prompt, full, embedding=embedding, batch_size=8)
    t0 = time.perf_counter()
    monai_map = monai_occlusion(engine, image, p, s, 8)
    rows.append({"slice": k, "method": f"MONAI OcclusionSensitivity (full image, mask {p}, overlap {1 - s / p:.2f})",
                 "encoder_passes": engine.evaluations, "seconds": time.perf_counter() - t0,
                 "deletion_auc": deletion(monai_map)})

    from captum.attr import Occlusion

    engine = PerturbationEngine(session.segmenter, image, prompt, full, embedding=embedding, batch_size=8)
    model = _Scorer(engine)
    t0 = time.perf_counter()
    attr = Occlusion(lambda t: model(t)[:, 0]).attribute(x, sliding_window_shapes=(1, p, p), strides=(1, s, s),
                                                         baselines=0.0, perturbations_per_eval=8)
    rows.append({"slice": k, "method": f"Captum Occlusion (full image, window {p}, stride {s})",
                 "encoder_passes": engine.evaluations, "seconds": time.perf_counter() - t0,
                 "deletion_auc": deletion(attr[0, 0].detach().numpy())})
    return rows


#: how the "early stop at" column was found: since stop 31 RISE's own rule; the rows of an older
#: table (no ``stop_rule``) were found by the rule before it
STOP_RULE = ("the default early stop (since stop 31) is a split-half reliability >= 0.9 (the two halves of "
             "the masks' maps, correlated over the ROI and stepped up by Spearman-Brown), after at least 100 masks.")
OLD_STOP_RULE = ("the early stop of these rows is the rule before stop 31: Spearman >= 0.95 between checks 50 masks "
                 "apart, twice in a row, after at least 100 masks.")


def rise_stream(engine, rng, n: int, cells: int = 7, p: float = 0.5, every: int = 50):
    """RISE's map and its split-half reliability after every ``every`` masks of one random stream
    (the estimator and the sums of :class:`RISE`)."""
    from .explain.rise import RiseSums, rise_masks

    sums = RiseSums(engine.image.shape)
    while sums.used < n:
        masks = rise_masks(rng, min(every, n - sums.used), engine.image.shape, cells, p)
        sums.add(engine.scores(masks, total=0), masks)
        yield sums.used, sums.map(), sums.reliability(engine.roi)


def rise_convergence(session, seg, k: int, reference: int, budget: int, seed: int = 0,
                     on_update=None) -> Dict:
    """Masks RISE needs before its map reaches Spearman 0.9 (over the ROI) with a map from
    ``reference`` masks of an independent stream, and where the default early stop ends.

    The test stream (``budget`` masks, checkpoints every 50) runs first; the reference stream then
    grows, and the curve is recomputed against it at 250, 500, 1000, 1500 and ``reference`` masks
    (``on_update`` receives each partial result, so a run cut short still tells something).
    """
    from .explain.base import PerturbationEngine
    from .explain.rise import RISE
    from .metrics import spearman

    image, prompt, embedding, mask, region = slice_setup(session, seg, k)
    engine = PerturbationEngine(session.segmenter, image, prompt, region, embedding=embedding, batch_size=16)
    # the test stream; RISE's early stop (same seed, same masks) sees exactly these checkpoints
    defaults = RISE(None)
    checkpoints, streak, stop_at, stop_reliability = [], 0, None, None
    t0 = time.perf_counter()
    for n, m, reliability in rise_stream(engine, np.random.default_rng(seed), budget, every=defaults.check_every):
        if stop_at is None:
            streak, stop = defaults.config.next_streak(streak, reliability, n)
            if stop:
                stop_at, stop_reliability = n, round(reliability, 4)
        checkpoints.append((n, m))
    seconds_per_mask = (time.perf_counter() - t0) / budget
    result: Dict = {"slice": k, "early_stop_at": stop_at, "stop_rule": "split-half",
                    "reliability_at_stop": stop_reliability,
                    "seconds_per_mask": round(seconds_per_mask, 3)}
    marks = sorted({m for m in (250, 500, 1000, 1500) if m < reference} | {reference})
    for n_ref, ref_map, _ in rise_stream(engine, np.random.default_rng(seed + 1000), reference):
        if n_ref not in marks:
            continue
        curve = [[n, round(spearman(m, ref_map, region), 4)] for n, m in checkpoints]
        result.update(reference_masks=n_ref, curve=curve,
                      masks_to_0_9=next((n for n, r in curve if r >= 0.9), None),
                      early_stop_spearman_vs_reference=next((r for n, r in curve if n == stop_at), None))
        if on_update is not None:
            on_update(dict(result))
    return result


def layers_part(sample, segmenter, stride: int = 3, quick: bool = False) -> Dict:
    """Layer maps on every ``stride``-th slice through the left caudate: cost against segmenting
    the same slices, and the per-layer localisation table for the three stages, beside the
    spatial weighting alone and a re-drawn encoder."""
    from .explain.layers import LayerMaps, spatial_weight
    from .explain.measure import localisation
    from .metrics import normalise01
    from .models.base import randomized_copy
    from .explain_volume import component_summary, slice_prompt as _slice_prompt
    from .pipeline import Session
    from .volume import LabelBoxPrompt

    truth = sample.mask("Left_Caudate")
    ks = [int(k) for k in np.unique(np.nonzero(truth)[0])[2:-2:stride]][: 2 if quick else None]
    labels = truth.astype(np.uint8)
    labels[[k for k in range(labels.shape[0]) if k not in ks]] = 0
    prompt = LabelBoxPrompt(labels, 1, 0, "atlas")
    segmenter.embed(np.zeros((64, 64), np.float32))  # warm-up, outside every timing
    session = Session(sample.image, segmenter)
    seg = session.segment(prompt, name="left_caudate")
    runs = {r.index: r for r in seg.slices}
    # Interleaved slice by slice, so a change in the machine's load hits both sides alike:
    # segmenting slice k (a fresh encoder pass and the decoder) against explaining it with each stage
    # (`Session.explain`: ROI, one hooked encoder pass, maps and the per-layer table).
    seg_seconds, seconds = 0.0, {1: 0.0, 2: 0.0, 3: 0.0}
    per_slice: Dict[int, List] = {1: [], 2: [], 3: []}
    rois = {}
    for n, k in enumerate(ks):
        image, p = (session.volume_segmenter.model_slice(k),
                    session.volume_segmenter.to_model_prompt(_slice_prompt(runs[k].prompt)))
        jobs = [0, 1, 2, 3]  # 0: segmentation, 1-3: the stages; the order rotates from slice to slice
        for job in jobs[n % 4:] + jobs[:n % 4]:
            t0 = time.perf_counter()
            if job == 0:
                segmenter.decode(segmenter.embed(image), p.clipped(image.shape))
                seg_seconds += time.perf_counter() - t0
                continue
            run = session.explain(seg, [LayerMaps(stage=job, layers="all")], slices=[k], target=truth)  # every layer's row
            seconds[job] += time.perf_counter() - t0
            per_slice[job].append(run.explanations["layers"][k])
            rois[k] = run.roi[k].astype(bool)
    keys = ("pointing_game", "iou_target", "energy_in_target")
    mean = lambda rows, key: round(float(np.mean([float(r[key]) for r in rows])), 4)  # noqa: E731
    stages, tables = {}, {}
    for stage, exs in per_slice.items():
        summary = component_summary([e.component_table for e in exs], "layer")
        stages[stage] = {"seconds": seconds[stage], "ratio_to_segmentation": seconds[stage] / seg_seconds,
                         "best_layer": summary["best_layer"],
                         "fused": {key: mean([e.metrics for e in exs], key) for key in keys}}
        tables[stage] = summary["layers"]
    redrawn = LayerMaps(randomized_copy(segmenter, seed=1, part="image_encoder"), layers="all")
    prior, random_rows = [], {}
    for k in ks:
        image, p = (session.volume_segmenter.model_slice(k),
                    session.volume_segmenter.to_model_prompt(_slice_prompt(runs[k].prompt)))
        to_model = session.volume_segmenter.to_model
        prior.append(localisation(normalise01(spatial_weight(image.shape, p.box, 0.3), to_model(rois[k])),
                                  to_model(truth[k])))
        for r in redrawn.explain(image, p, roi=to_model(rois[k]), target=to_model(truth[k])).component_table:
            random_rows.setdefault(r["layer"], []).append(r)
    return {"slices": ks, "segmentation_seconds": seg_seconds, "stages": stages, "tables": tables,
            "spatial_weighting_alone": {k: mean(prior, k) for k in keys},
            "redrawn_encoder_stage1": {name: {k: mean(rows, k) for k in keys} for name, rows in random_rows.items()}}


def bench_explain(outdir: Path, quick: bool = False, parts=("occlusion", "rise"), slices: int = 2,
                  rise_reference: int = 2000, rise_budget: int = 500, steps: int = 8, device: str = "cpu") -> Dict:
    """Run the chosen ``parts`` and write explain.json/explain.md into ``outdir``.

    Each part is stored with the machine it ran on; a part not run this time is kept from an
    existing explain.json, so the slow parts can be measured separately (or on another device).
    """
    from .models.litemedsam import LiteMedSAM
    from .pipeline import Session
    from .sample_data import load_mni_atlas
    from .volume import LabelBoxPrompt

    outdir = Path(outdir)
    sample = load_mni_atlas(["Left_Caudate"])
    session = Session(sample.image, LiteMedSAM(device=device))
    ks = caudate_slices(sample, 1 if quick else slices)
    labels = sample.mask("Left_Caudate").astype(np.uint8)
    labels[[k for k in range(labels.shape[0]) if k not in ks]] = 0  # segment only the benchmark slices
    seg = session.segment(LabelBoxPrompt(labels, 1, 0, "atlas"), name="left_caudate")
    result = previous_results(outdir / "explain.json") if not quick else {}
    if "occlusion" in parts:
        t0 = time.perf_counter()
        rows = [r for k in ks for r in occlusion_rows(session, seg, k, 4 if quick else steps)]
        result["occlusion"] = {"machine": machine(device), "slices": ks, "rows": rows,
                               "seconds": time.perf_counter() - t0}
    if "layers" in parts:
        t0 = time.perf_counter()
        result["layers"] = dict(layers_part(sample, session.segmenter, quick=quick), machine=machine(device),
                                seconds=time.perf_counter() - t0)
    if "rise" in parts:
        t0 = time.perf_counter()
        ref = 100 if quick else rise_reference
        partial = outdir / "explain_rise_partial.json"
        done: List[Dict] = []

        def update(r):
            write_text_atomic(partial, json.dumps(done + [r], indent=2))

        for k in ks:
            done.append(rise_convergence(session, seg, k, ref, min(rise_budget, ref), on_update=update))
        result["rise"] = {"machine": machine(device), "slices": ks, "rows": done,
                          "seconds": time.perf_counter() - t0}
        partial.unlink(missing_ok=True)
    write_tables(outdir, "explain", markdown(result, quick), result)
    return result


def previous_results(path: Path) -> Dict:
    """Parts of an earlier run (converted from the first layout, which had one machine for all)."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    if isinstance(old.get("occlusion"), list):
        old = {"occlusion": {"machine": old["machine"], "slices": old["slices"], "rows": old["occlusion"],
                             "seconds": old.get("seconds")}}
    return {k: v for k, v in old.items() if k in ("occlusion", "rise", "layers")}


def where(m: Dict) -> str:
    text = f"{m['platform']}, {m['threads']} torch threads"
    return text + (f", LiteMedSAM on {m['accelerator']}" if m.get("accelerator") else "")


def markdown(result: Dict, quick: bool) -> str:
    lines = ["# Explanation benchmark (LiteMedSAM, MNI152 1 mm, left caudate, axial slices)", "",
             f"Produced by `xaiseg bench explain`{' --quick' if quick else ''}. Score = Dice of the perturbed mask "
             "against the unperturbed mask, zero fill. Every model evaluation goes through the same perturbation "
             "engine, so encoder passes are counted one way for all methods.", ""]
    if "occlusion" in result:
        occ = result["occlusion"]
        lines += ["## ROI occlusion against full-image occlusion", "",
                  f"On {where(occ['machine'])}; slices {occ['slices']}. Patch 64 and stride 32 on LiteMedSAM's "
                  "256 grid for all three implementations. Deletion AUC over the embedding ROI (lower is better).", "",
                  "| slice | method | encoder passes | seconds | deletion AUC |", "|---|---|---|---|---|"]
        for r in occ["rows"]:
            lines.append(f"| {r['slice']} | {r['method']} | {r['encoder_passes']} | {r['seconds']:.1f} | "
                         f"{r['deletion_auc']:.3f} |")
        ours = [r for r in occ["rows"] if r["method"].startswith("XAISeg ROI occlusion (embedding")]
        for name in ("MONAI", "Captum"):
            theirs = [r for r in occ["rows"] if r["method"].startswith(name)]
            if ours and theirs:
                passes = sum(r["encoder_passes"] for r in theirs) / sum(r["encoder_passes"] for r in ours)
                secs = sum(r["seconds"] for r in theirs) / sum(r["seconds"] for r in ours)
                lines.append(f"\n{name} / XAISeg (embedding ROI): {passes:.1f}x the encoder passes, {secs:.1f}x the time.")
        lines.append("")
    if "rise" in result:
        rise = result["rise"]
        lines += ["## RISE convergence", "",
                  f"On {where(rise['machine'])}. 7x7 cells, p = 0.5, masks applied inside the embedding ROI. "
                  "Spearman over the ROI between the map after n masks and a reference map from an independent "
                  "stream (another seed); "
                  + (STOP_RULE if all(r.get("stop_rule") == "split-half" for r in rise["rows"]) else OLD_STOP_RULE), "",
                  "| slice | reference masks | masks to Spearman 0.9 | early stop at | Spearman there | s per mask |",
                  "|---|---|---|---|---|---|"]
        for r in rise["rows"]:
            lines.append(f"| {r['slice']} | {r['reference_masks']} | {r['masks_to_0_9']} | {r['early_stop_at']} | "
                         f"{r['early_stop_spearman_vs_reference']} | {r['seconds_per_mask']} |")
        for r in rise["rows"]:
            lines += ["", f"Slice {r['slice']}, Spearman by number of masks: "
                      + ", ".join(f"{n}: {v}" for n, v in r["curve"])]
    if "layers" in result:
        lines += layers_markdown(result["layers"])
    return "\n".join(lines) + "\n"


def layers_markdown(lay: Dict) -> List[str]:
    st = {int(k): v for k, v in lay["stages"].items()}
    tables = {int(k): v for k, v in lay["tables"].items()}
    lines = ["", "## Layer maps (seed 002)", "",
             f"On {where(lay['machine'])}; {len(lay['slices'])} slices through the left caudate ({lay['slices']}), "
             "tight atlas box per slice, maps in the default embedding ROI, Harvard-Oxford > 50 % as the truth. "
             "Cost: `session.explain(..., [LayerMaps(stage)], slices=[k])` (ROI, one hooked encoder pass, maps, "
             "table) against segmenting slice k (a fresh encoder pass and the decoder: "
             f"{lay['segmentation_seconds']:.1f} s for all slices), interleaved slice by slice (the order rotating) in one process.", "",
             "| stage | seconds | x segmentation | best layer | fused: pointing game | fused: IoU |", "|---|---|---|---|---|---|"]
    for k in sorted(st):
        v = st[k]
        lines.append(f"| {k} | {v['seconds']:.1f} | {v['ratio_to_segmentation']:.2f} | {v['best_layer']} | "
                     f"{v['fused']['pointing_game']} | {v['fused']['iou_target']} |")
    lines += ["", "Per layer: pointing-game hit rate / IoU at the truth's size, by stage; last column stage 1 with "
              "the image encoder re-drawn (model randomisation).", "",
              "| layer | stage 1 | stage 2 | stage 3 | stage 1, re-drawn encoder |", "|---|---|---|---|---|"]
    rnd = lay["redrawn_encoder_stage1"]
    for name in tables[1]:
        cells = [f"{tables[s_][name]['pointing_game']:.2f} / {tables[s_][name]['iou_target']:.3f}" for s_ in (1, 2, 3)]
        cells.append(f"{rnd[name]['pointing_game']:.2f} / {rnd[name]['iou_target']:.3f}" if name in rnd else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    a = lay["spatial_weighting_alone"]
    lines += ["", f"Stage 3's spatial weighting alone (no features): pointing game {a['pointing_game']:.2f}, "
              f"IoU {a['iou_target']:.3f}."]
    return lines

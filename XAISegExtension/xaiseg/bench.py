"""`xaiseg bench`: measurements that go into docs/benchmarks, never into timed unit tests."""
from __future__ import annotations

import platform
import time
from pathlib import Path

from .io import write_tables


def run_bench(what: str, outdir: Path, quick: bool = False, parts=("occlusion", "rise"),
              device: str = "cpu") -> dict:
    if what == "segmentation":
        return bench_segmentation(Path(outdir), quick, device=device)
    if what == "explain":
        from .bench_explain import bench_explain

        return bench_explain(Path(outdir), quick, parts=parts, device=device)
    raise ValueError(f"unknown benchmark {what!r}")


def bench_segmentation(outdir: Path, quick: bool = False, device: str = "cpu") -> dict:
    """Dice per structure for both prompting modes, trained vs randomised weights, seconds per
    slice for embedding and decoding, and peak memory, on the MNI152 template."""
    from .demo import evaluate, markdown_table, peak_rss_mb, slice_timings
    from .models.litemedsam import LiteMedSAM
    from .pipeline import SegmentConfig, Session
    from .progress import TqdmProgress
    from .sample_data import DEMO_STRUCTURES, load_mni_atlas

    structures = DEMO_STRUCTURES[:1] if quick else DEMO_STRUCTURES
    t0 = time.perf_counter()
    sample = load_mni_atlas(structures)
    session = Session(sample.image, LiteMedSAM(device=device), SegmentConfig())
    rows = evaluate(session, sample, structures, progress=TqdmProgress())
    timings = slice_timings(session)
    random_session = Session(sample.image, LiteMedSAM(weights="random", seed=0, device=device), SegmentConfig())
    random_rows = evaluate(random_session, sample, structures[:1], modes=("boxes",), progress=TqdmProgress())
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "threads": __import__("torch").get_num_threads()},
        "preprocessing": session.preprocessing_record(),
        "rows": [r.record() for r in rows],
        "random_weights": [r.record() for r in random_rows],
        "timings": timings,
        "embeddings_computed": session.volume_segmenter.encoder_passes,
        "prompts_decoded": session.volume_segmenter.decoder_passes,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": time.perf_counter() - t0,
    }
    md = [
        "# Segmentation benchmark (LiteMedSAM, MNI152 1 mm, Harvard-Oxford > 50 %)",
        "",
        "Produced by `xaiseg bench segmentation`" + (" --quick" if quick else "") + f" on {result['machine']['platform']}, "
        f"{result['machine']['threads']} torch threads.",
        "",
        markdown_table(rows),
        "",
        "Randomised weights (same code, `LiteMedSAM(weights='random')`):",
        "",
        markdown_table(random_rows),
        "",
        f"- embedding: {timings['embed_s_per_slice']:.2f} s per slice; decoding on a cached embedding: "
        f"{timings['decode_s_per_slice'] * 1000:.0f} ms per prompt",
        f"- {result['embeddings_computed']} slice embeddings computed for {result['prompts_decoded']} decoded prompts "
        "(the cache shares embeddings between structures and prompting modes)",
        f"- peak resident memory: {result['peak_rss_mb']:.0f} MB; total {result['seconds']:.0f} s",
        "",
    ]
    write_tables(outdir, "segmentation", "\n".join(md), result)
    print("\n".join(md))
    return result

"""Draw docs/images/architecture.png: the data flow of one run, from the three front doors to the files."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

BOXES = {  # name: (x, y, w, h, text, colour)
    "cli": (0.2, 8.6, 2.6, 0.9, "xaiseg CLI\ncli.py, cli_options.py", "#dbe9f6"),
    "worker": (3.2, 8.6, 2.6, 0.9, "worker.py\n(Slicer's background process)", "#dbe9f6"),
    "slicer": (6.2, 8.6, 3.6, 0.9, "Slicer module: Logic + RunSettings\nXAISegExtensionLib/", "#dbe9f6"),
    "request": (2.2, 7.0, 5.6, 0.9, "request.py: RunRequest (one typed request, one parser,\nthe defaults)", "#fde9c8"),
    "run": (2.2, 5.7, 5.6, 0.8, "pipeline.run(request, progress)", "#fde9c8"),
    "io": (0.0, 4.2, 2.9, 1.0, "io.py + integrity.py\nread, check, preprocess.py", "#e5f3e0"),
    "session": (3.3, 4.2, 3.3, 1.0, "Session -> VolumeSegmenter\n(volume.py, models/): masks,\ncached embeddings", "#e5f3e0"),
    "roi": (7.0, 4.2, 2.8, 1.0, "roi/: RoiFinder\n(embedding, box, mask, CLIP)", "#e5f3e0"),
    "explain": (0.6, 2.5, 4.3, 1.2, "explain_volume.py: per slice, each\nExplainer.attribute() (explain/: occlusion,\nRISE, LIME, SHAP, layers; registry)", "#f3e0ef"),
    "measure": (5.3, 2.5, 4.5, 1.2, "explain/measure.py: the metrics stage\nfaithfulness, trivial baselines, noise,\nlocalisation, sanity, cascade", "#f3e0ef"),
    "files": (0.6, 0.6, 4.3, 1.1, "ExplainRun.write: raw + display saliency,\nlabels, ROI, PNGs, metrics.json\n(staged, moved in whole)", "#eeeeee"),
    "narrate": (5.3, 0.6, 4.5, 1.1, "narrate/: findings.json -> template / LLaVA /\nOpenAI narrative -> report JSON + HTML", "#eeeeee"),
}
ARROWS = [("cli", "request"), ("worker", "request"), ("slicer", "request"), ("request", "run"), ("run", "io"),
          ("run", "session"), ("run", "roi"), ("session", "explain"), ("roi", "explain"), ("explain", "measure"),
          ("explain", "files"), ("measure", "files"), ("files", "narrate")]


def centre(name, side):
    x, y, w, h = BOXES[name][:4]
    return {"top": (x + w / 2, y + h), "bottom": (x + w / 2, y), "left": (x, y + h / 2), "right": (x + w, y + h / 2)}[side]


def main(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 10))
    for name, (x, y, w, h, text, colour) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="#444444", lw=1.2))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9.5)
    for a, b in ARROWS:
        ya, yb = BOXES[a][1], BOXES[b][1]
        if abs(ya - yb) < 0.01:
            start, end = centre(a, "right"), centre(b, "left")
        elif ya > yb:
            start, end = centre(a, "bottom"), centre(b, "top")
        else:
            start, end = centre(a, "top"), centre(b, "bottom")
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#333333", lw=1.2))
    ax.text(5, 9.85, "XAISeg: one run, from any front door to the files", ha="center", fontsize=13, weight="bold")
    ax.set_xlim(-0.2, 10.1)
    ax.set_ylim(0.3, 10.1)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(Path(__file__).resolve().parents[1] / "docs" / "images" / "architecture.png")

"""Layer maps: gradient-free similarity maps of every encoder layer (seed 002).

One forward pass of the image encoder per slice, with forward hooks on every stage and block
(removed again in a ``finally``, also when the pass fails).  For each hooked layer the output is
read as an (h, w, C) feature grid over the slice, and each position is compared by cosine
similarity with reference features:

stage 1 ("prototype")
    the structure prototype, the mean feature inside the prompt box;
stage 2 ("prompt")
    stage 1 mixed with a second reference taken from the prompt encoder: where the prompt's
    sparse embeddings (box corners or points) attend over the image embedding plus its positional
    encoding, the keys the mask decoder's tokens meet, softmax-weighted over positions.  That
    attention, resized to each layer's grid, weights the layer's features into its prompt
    reference.  Models without a prompt encoder use the features at the prompt's location;
stage 3 ("spatial")
    four components, prototype and prompt similarity minus similarity to the whole slice's mean
    feature and to the context ring around the box, then weighted towards the box centre by
    ``floor + (1 - floor) * exp(-d^2 / (2 sigma^2))`` with sigma half the box diagonal, so distant
    tissue still shows at ``floor``.

The paper gives the components, not their weights; the defaults here are ours and are settings.
Each layer's map is upsampled to the slice and min-max normalised; the fused map is the mean of
the selected layers' maps.  The cost is one encoder pass per slice (the similarity maps are cheap),
so it needs no perturbations at all.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, ModelError
from ..metrics import normalise01, spearman
from ..models.base import Embedding, SlicePrompt, check_slice, randomized_copy
from ..progress import Progress, ensure
from ..roi.fallback import box_roi, dilate, prompt_box, slice_extent
from .base import Explainer, Explanation, PerturbationEngine, faithfulness, localisation

STAGES = (1, 2, 3)
LAYOUTS = ("nchw", "nhwc", "nlc")
SELECTIONS = ("all", "blocks", "stages")


@dataclass(frozen=True)
class EncoderLayer:
    """A hooked encoder module: its name, the module, and how its output is laid out
    (``nchw``, ``nhwc`` (SAM ViT blocks) or ``nlc`` (tokens of a square grid, TinyViT))."""

    name: str
    module: Any
    layout: str
    kind: str = "block"  # "block", "stage" (a stage's output) or "io" (patch embedding, neck)


def encoder_layers(segmenter) -> List[EncoderLayer]:
    """The layers of ``segmenter``'s image encoder in forward order.

    LiteMedSAM (TinyViT): patch embedding, every block of the four stages, each stage's output
    and the neck.  MedSAM / SAM ViT: patch embedding, the transformer blocks and the neck.  A
    segmenter may define ``encoder_layers()`` itself; any other torch model gets its direct
    children.
    """
    own = getattr(segmenter, "encoder_layers", None)
    if callable(own):
        return list(own())
    root = getattr(segmenter, "module", None)
    if root is None:
        raise ModelError(f"{getattr(segmenter, 'name', segmenter)!r} has no torch module; layer maps need one")
    enc = getattr(root, "image_encoder", None)
    if enc is not None and hasattr(enc, "layers") and hasattr(enc, "patch_embed"):  # TinyViT
        out = [EncoderLayer("patch_embed", enc.patch_embed, "nchw", "io")]
        for i, stage in enumerate(enc.layers):
            conv = not hasattr(stage.blocks[0], "attn")
            for j, block in enumerate(stage.blocks):
                out.append(EncoderLayer(f"stage{i}.block{j}", block, "nchw" if conv else "nlc"))
            out.append(EncoderLayer(f"stage{i}", stage, "nlc" if getattr(stage, "downsample", None) is not None
                                    or not conv else "nchw", "stage"))
        if hasattr(enc, "neck"):
            out.append(EncoderLayer("neck", enc.neck, "nchw", "io"))
        return out
    if enc is not None and hasattr(enc, "blocks") and hasattr(enc, "patch_embed"):  # SAM ViT
        out = [EncoderLayer("patch_embed", enc.patch_embed, "nhwc", "io")]
        out += [EncoderLayer(f"block{j}", b, "nhwc") for j, b in enumerate(enc.blocks)]
        if hasattr(enc, "neck"):
            out.append(EncoderLayer("neck", enc.neck, "nchw", "io"))
        return out
    children = list((enc or root).named_children())
    if not children:
        raise ModelError(f"{getattr(segmenter, 'name', type(root).__name__)} has no sub-modules to hook")
    return [EncoderLayer(name, module, "nchw") for name, module in children]


def select_layers(layers: Sequence[EncoderLayer], which) -> List[EncoderLayer]:
    """``all``, ``blocks`` (blocks only), ``stages`` (stage outputs, patch embedding and neck),
    or a list / comma-separated string of layer names."""
    if isinstance(which, str) and which in SELECTIONS:
        if which == "all":
            return list(layers)
        want = {"blocks": ("block",), "stages": ("stage", "io")}[which]
        chosen = [lay for lay in layers if lay.kind in want]
        return chosen or list(layers)
    names = [n.strip() for n in (which.split(",") if isinstance(which, str) else which) if str(n).strip()]
    known = {lay.name: lay for lay in layers}
    missing = [n for n in names if n not in known]
    if missing or not names:
        raise InputError(f"layer(s) {missing or names} are unknown; expected {', '.join(SELECTIONS)} or names "
                         f"among {', '.join(known)}")
    return [known[n] for n in names]


def grid_of(output, layout: str):
    """A hooked output as an (h, w, C) float tensor (first item of the batch): a view where the
    layout allows, so the hooks copy nothing."""
    t = output[0] if isinstance(output, (tuple, list)) else output
    if not hasattr(t, "dim"):
        raise ModelError(f"a hooked layer returned {type(t).__name__}; expected a tensor")
    t = t.detach().float()
    if layout == "nchw" and t.dim() == 4:
        return t[0].permute(1, 2, 0)
    if layout == "nhwc" and t.dim() == 4:
        return t[0]
    if layout == "nlc" and t.dim() == 3:
        n = int(round(t.shape[1] ** 0.5))
        if n * n != t.shape[1]:
            raise ModelError(f"tokens of shape {tuple(t.shape)} do not form a square grid")
        return t[0].reshape(n, n, t.shape[2])
    raise ModelError(f"a hooked layer returned shape {tuple(t.shape)}, which is not {layout}")


def capture(segmenter, image: np.ndarray, layers: Sequence[EncoderLayer]) -> Tuple[Embedding, Dict[str, Any]]:
    """Encode ``image`` once with forward hooks on ``layers``; their outputs as (h, w, C) tensors.

    The hooks are removed afterwards, also when the forward pass raises."""
    grids: Dict[str, Any] = {}
    handles = []
    try:
        for lay in layers:
            def hook(module, inputs, output, lay=lay):
                grids[lay.name] = grid_of(output, lay.layout)
            handles.append(lay.module.register_forward_hook(hook))
        embedding = segmenter.embed(image)
    finally:
        for h in handles:
            h.remove()
    missing = [lay.name for lay in layers if lay.name not in grids]
    if missing:
        raise ModelError(f"layer(s) {missing} did not run in the encoder's forward pass")
    return embedding, grids


# similarity maps ----------------------------------------------------------------------------------

def _resize(t, shape):
    import torch.nn.functional as F

    return F.interpolate(t[None, None], size=tuple(int(v) for v in shape), mode="bilinear", align_corners=False)[0, 0]


def _grid_box(grid: Tuple[int, int], box, image_shape) -> np.ndarray:
    gh, gw = grid
    ih, iw = image_shape
    return box_roi((gh, gw), (box[0] * gw / iw, box[1] * gh / ih, box[2] * gw / iw, box[3] * gh / ih))


def prompt_attention(segmenter, embedding: Embedding, prompt: SlicePrompt) -> Optional[np.ndarray]:
    """Where the prompt encoder's sparse embeddings point on the image embedding's grid: softmax
    over positions of token . (feature + positional encoding) / sqrt(C), averaged over the tokens,
    cut to the slice.  None for models without a SAM prompt encoder."""
    import torch

    module = getattr(segmenter, "module", None)
    pe_mod = getattr(module, "prompt_encoder", None)
    feats = embedding.features
    if pe_mod is None or not hasattr(feats, "dim") or feats.dim() != 4:
        return None
    s = embedding.scale
    sx, sy = (s, s) if np.isscalar(s) else s
    dev = feats.device
    boxes = points = None
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        boxes = torch.tensor([[x0 * sx, y0 * sy, (x1 + 1) * sx, (y1 + 1) * sy]], dtype=torch.float32, device=dev)
    if prompt.points:
        coords = torch.tensor([[[(x + 0.5) * sx, (y + 0.5) * sy] for x, y in prompt.points]],
                              dtype=torch.float32, device=dev)
        points = (coords, torch.tensor([list(prompt.labels)], dtype=torch.int64, device=dev))
    with torch.inference_mode():
        sparse, _ = pe_mod(points=points, boxes=boxes, masks=None)
        keys = (feats + pe_mod.get_dense_pe())[0].float()  # (C, h, w)
        c, h, w = keys.shape
        fh, fw = slice_extent((h, w), embedding)
        keys = keys[:, :fh, :fw].reshape(c, -1)
        tokens = sparse[0].float()  # (n, C)
        if prompt.points:  # negative points' tokens are not evidence for the structure
            labels = list(prompt.labels) + [1] * (tokens.shape[0] - len(prompt.labels))
            tokens = tokens[[i for i, lab in enumerate(labels) if lab != 0]] if 0 in labels else tokens
        att = torch.softmax(tokens @ keys / c ** 0.5, dim=1).mean(dim=0)
    return att.reshape(fh, fw).cpu().numpy()


def _location_weights(prompt: SlicePrompt, box, image_shape) -> np.ndarray:
    """Prompt reference for models without a prompt encoder: a bump at the positive points, or at
    the box centre (slice grid)."""
    h, w = image_shape
    pts = [p for p, lab in zip(prompt.points or (), prompt.labels or ()) if lab == 1]
    if not pts:
        pts = [((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)]
    sigma = max(1.0, 0.25 * min(box[2] - box[0] + 1, box[3] - box[1] + 1))
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros(image_shape, np.float32)
    for x, y in pts:
        out += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)).astype(np.float32)
    return out


def spatial_weight(shape: Tuple[int, int], box, floor: float) -> np.ndarray:
    """``floor + (1 - floor) * exp(-d^2 / (2 sigma^2))``, d the distance to the box centre and sigma
    half the box diagonal (slice pixels)."""
    h, w = shape
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    sigma = max(1.0, 0.5 * float(np.hypot(box[2] - box[0] + 1, box[3] - box[1] + 1)))
    yy, xx = np.mgrid[0:h, 0:w]
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    return (floor + (1.0 - floor) * np.exp(-d2 / (2 * sigma ** 2))).astype(np.float32)


@dataclass(frozen=True)
class LayerWeights:
    """Stage 2 and 3 weights (ours; seed 002 names the components, not the weights)."""

    prompt: float = 0.5  # stage 2: share of the prompt reference (the prototype gets the rest)
    prototype3: float = 0.35  # stage 3: + prototype similarity
    prompt3: float = 0.35  # stage 3: + prompt similarity
    global3: float = 0.15  # stage 3: - similarity to the slice's mean feature
    context3: float = 0.15  # stage 3: - similarity to the context ring around the box
    floor: float = 0.3  # stage 3: spatial weight far from the box centre
    ring: float = 0.5  # context ring width, times the box's longer side


def layer_map(f, box, image_shape, embedding: Embedding, stage: int, weights: LayerWeights,
              prompt_weights: Optional[np.ndarray], spatial: Optional[np.ndarray] = None,
              where: Optional[np.ndarray] = None) -> np.ndarray:
    """One layer's map on the slice grid, [0, 1] inside ``where`` (default: the whole slice) and 0
    outside.  ``f``: (gh, gw, C) tensor over the model grid; ``prompt_weights``: attention over the
    slice (any grid) for the prompt reference; ``spatial``: stage 3's weighting on the slice grid
    (computed from the box when not given).

    Every reference is a weighted mean of the layer's features (prototype: uniform inside the box;
    prompt: the attention; global: uniform; context: uniform on the ring), so all of them come from
    one matrix product, and all similarities from a second one.
    """
    import torch

    fh, fw = slice_extent(tuple(f.shape[:2]), embedding)
    flat = f[:fh, :fw].reshape(fh * fw, f.shape[2])  # (positions, C), contiguous
    inside_np = _grid_box((fh, fw), box, image_shape)
    rows = [inside_np.astype(np.float32)]
    if stage >= 2:
        a = _resize(torch.as_tensor(prompt_weights, dtype=torch.float32, device=f.device), (fh, fw)).clamp_min(0)
        rows.append(a.cpu().numpy())
    if stage == 3:
        side = max(1, int(round(weights.ring * max(inside_np.sum(0).max(), inside_np.sum(1).max()))))
        ring = dilate(inside_np, side) & ~inside_np
        if not ring.any():
            ring = ~inside_np if (~inside_np).any() else inside_np
        rows += [np.ones((fh, fw), np.float32), ring.astype(np.float32)]
    w = torch.as_tensor(np.stack([r.reshape(-1) for r in rows]), dtype=flat.dtype, device=flat.device)
    w = w / (w.sum(dim=1, keepdim=True) + 1e-12)
    refs = w @ flat  # (k, C): prototype[, prompt[, global, context]]
    sims = (flat @ refs.T) / (flat.norm(dim=1, keepdim=True) * refs.norm(dim=1) + 1e-8)  # (positions, k)
    sims = sims.T.reshape(len(rows), fh, fw)
    if stage == 1:
        m = sims[0]
    elif stage == 2:
        m = (1 - weights.prompt) * sims[0] + weights.prompt * sims[1]
    else:
        m = (weights.prototype3 * sims[0] + weights.prompt3 * sims[1] - weights.global3 * sims[2]
             - weights.context3 * sims[3])
    out = _resize(m, image_shape).cpu().numpy()
    if stage == 3:
        if spatial is None:
            spatial = spatial_weight(tuple(image_shape), box, weights.floor)
        out = normalise01(out) * spatial
    return normalise01(out, where)


# the explainer ----------------------------------------------------------------------------------

class LayerMaps(Explainer):
    """Similarity maps of every encoder layer and their fusion (seed 002); no perturbations.

    stage: 1 (prototype; the default), 2 (+ prompt embedding) or 3 (four components, spatially
    weighted).  Stage 3's weighting towards the box centre localises a structure in a tight box on
    its own, whatever the encoder says (docs/layers.md and the benchmark compare it with the
    weighting alone and with a re-drawn encoder), so the default shows the encoder's evidence
    unweighted.
    roi: as for every method, the maps are normalised inside the ROI and 0 outside it.
    layers: ``all``, ``blocks``, ``stages`` or layer names; the fused map averages them.
    metric_steps: 0 by default (faithfulness curves cost perturbed encoder passes; the layer maps
    themselves cost one pass); the localisation table is always computed, against ``target`` when
    given and otherwise against the model's own mask.
    """

    name = "layers"

    def __init__(self, segmenter=None, *, stage: int = 1, layers="all", weights: LayerWeights = LayerWeights(),
                 metric_steps: int = 0, **common) -> None:
        super().__init__(segmenter, metric_steps=metric_steps, **common)
        if int(stage) not in STAGES:
            raise InputError(f"layer-map stage {stage!r} is unknown; expected 1, 2 or 3")
        if not isinstance(weights, LayerWeights):
            raise InputError(f"weights {weights!r} must be a LayerWeights")
        if not 0.0 <= weights.floor <= 1.0 or not 0.0 <= weights.prompt <= 1.0:
            raise InputError(f"layer weights {weights}: floor and prompt must lie in [0, 1]")
        self.stage, self.layers, self.weights = int(stage), layers, weights
        if isinstance(layers, str) and layers not in SELECTIONS and not layers.strip():
            raise InputError("layers is empty; expected all, blocks, stages or layer names")

    def settings(self) -> Dict[str, Any]:
        from dataclasses import asdict

        layers = self.layers if isinstance(self.layers, str) else list(self.layers)
        return dict(super().settings(), stage=self.stage, layers=layers, weights=asdict(self.weights))

    def maps(self, image: np.ndarray, prompt: SlicePrompt, progress: Optional[Progress] = None,
             stage: Optional[str] = None, logits: Optional[np.ndarray] = None, roi: Optional[np.ndarray] = None):
        """(fused map, {layer: map}, embedding, model mask, box) for one slice; ``logits``: the
        model's logits for ``prompt`` when already decoded (else they are decoded here); ``roi``:
        where the maps live (normalised there, 0 elsewhere; default the whole slice)."""
        progress = ensure(progress)
        chosen = select_layers(encoder_layers(self.segmenter), self.layers)
        progress.check()
        progress.stage(stage or self.name, 1)
        embedding, grids = capture(self.segmenter, image, chosen)
        mask = (logits if logits is not None else self.segmenter.decode(embedding, prompt.clipped(image.shape))) > 0
        box = prompt_box(prompt, mask)
        if box is None:
            raise InputError("layer maps need a box, a positive point or a non-empty mask for the prototype")
        att = None
        if self.stage >= 2:
            att = prompt_attention(self.segmenter, embedding, prompt)
            if att is None:
                att = _location_weights(prompt, box, image.shape)
        spatial = spatial_weight(image.shape, box, self.weights.floor) if self.stage == 3 else None
        per_layer = {}
        for lay in chosen:
            per_layer[lay.name] = layer_map(grids.pop(lay.name), box, image.shape, embedding, self.stage,
                                            self.weights, att, spatial, roi)
        progress.step(1, layers=len(per_layer))
        progress.check()
        fused = normalise01(np.mean(np.stack(list(per_layer.values())), axis=0), roi)
        return fused, per_layer, embedding, mask, box

    def explain(self, image: np.ndarray, prompt: SlicePrompt, *, roi: Optional[np.ndarray] = None,
                roi_source: str = "image", target: Optional[np.ndarray] = None,
                progress: Optional[Progress] = None, stage: Optional[str] = None, embedding=None,
                logits: Optional[np.ndarray] = None) -> Explanation:
        if self.segmenter is None:
            raise ModelError(f"{self.name}: no segmenter to explain; pass one to the constructor or use bind()")
        image = np.asarray(image, dtype=np.float32)
        check_slice(image)
        prompt.check_inside(image.shape)
        roi = np.ones(image.shape, bool) if roi is None else np.asarray(roi, bool)
        if target is not None and np.asarray(target).shape != image.shape:
            raise InputError(f"target mask of shape {np.asarray(target).shape} does not match the slice's "
                             f"shape {image.shape}")
        progress = ensure(progress)
        stage = stage or self.name
        t0 = time.perf_counter()
        # like every method's, the maps live in the ROI (normalised there, 0 elsewhere)
        fused, per_layer, own, mask, box = self.maps(image, prompt, progress, stage, logits, roi)
        seconds = time.perf_counter() - t0
        against = np.asarray(target, bool) if target is not None and np.any(target) else mask
        table = [dict(layer=name, **localisation(m, against)) for name, m in per_layer.items()]
        best = max(table, key=lambda r: (r["iou_target"], r["energy_in_target"]))["layer"] if table else None
        metrics: Dict[str, Any] = {"seconds": round(seconds, 3), "evaluations": 0, "roi_ratio": 1.0,
                                   "roi_fraction": float(roi.mean()), "layers": len(per_layer),
                                   "localised_against": "target" if against is not mask else "model mask"}
        metrics.update(localisation(fused, against))
        if self.metric_steps:
            engine = PerturbationEngine(self.segmenter, image, prompt, roi, score=self.score, fill=self.fill,
                                        batch_size=self.batch_size, progress=progress, stage=stage,
                                        embedding=embedding if embedding is not None else own, logits=logits)
            metrics.update(faithfulness(engine, normalise01(fused, roi), self.metric_steps, self.threshold,
                                        stage=f"{stage} metrics"))
            metrics["evaluations"] = engine.evaluations
        if self.sanity:
            metrics["sanity_similarity"] = self.sanity_similarity(image, prompt, roi, fused, progress, stage)
        settings = self.settings()
        extras = {"best_layer": best, "layer_table": table, "layer_maps": per_layer, "stage": self.stage}
        if target is not None:
            extras["target"] = np.asarray(target, bool)
        return Explanation(fused, fused, self.name, settings, int(metrics["evaluations"]), seconds, roi, roi_source,
                           mask, metrics, extras,
                           {"model": self.segmenter.describe(), "settings": settings, "seed": self.seed,
                            "prompt": prompt.record(), "seconds": round(seconds, 3),
                            "evaluations": {"hooked_encoder_passes": 1,
                                            "perturbed_encoder_passes": int(metrics["evaluations"])}})

    def sanity_similarity(self, image, prompt, roi, saliency, progress, stage) -> float:
        """Spearman over the ROI between this fused map and the fused map of a copy whose image
        encoder is re-drawn (the layer maps read the encoder, so that is what is randomised)."""
        module = self.segmenter.module
        part = "image_encoder" if module is not None and hasattr(module, "image_encoder") else None
        other = copy.copy(self)
        other.segmenter = randomized_copy(self.segmenter, seed=self.seed + 1, part=part)
        fused = other.maps(image, prompt, progress, f"{stage} sanity", roi=roi)[0]
        return spearman(saliency, fused, roi)  # both maps made in the same ROI

    def attribute(self, engine: PerturbationEngine) -> tuple:  # pragma: no cover - explain() is overridden
        raise NotImplementedError("layer maps do not perturb; call explain()")

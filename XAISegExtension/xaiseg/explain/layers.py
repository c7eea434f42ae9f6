"""Layer maps: gradient-free similarity maps of every encoder layer (seed 002).

One forward pass of the image encoder per slice, with forward hooks on the selected stages and
blocks (``layers``; removed again in a ``finally``, also when the pass fails).  For each hooked
layer the output is read as an (h, w, C) feature grid over the slice, and each position is compared
by cosine similarity with reference features:

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
the selected layers' maps.  By default (``deep``) those are the layers past the encoder's stem: the
patch embedding and TinyViT's convolutional stage 0 keep their maps when the weights are re-drawn at
random (Spearman 0.96 and 0.64 with the trained maps on the benchmark's slices), so they show the
image's contrast, not what training added (docs/layers.md); ``all`` fuses them too.  The cost is
one encoder pass per slice (the similarity maps are cheap), so it needs no perturbations at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, ModelError
from ..metrics import normalise01
from ..models.base import Embedding, SlicePrompt
from ..settings import setting
from ..roi.geometry import dilate, grid_box, prompt_box
from ..roi.similarity import resize as _resize
from ..roi.similarity import similarities, slice_extent
from .base import Attribution, CommonSettings, Explainer, PerturbationEngine
from .registry import register

STAGES = (1, 2, 3)
LAYOUTS = ("nchw", "nhwc", "nlc")
SELECTIONS = ("deep", "all", "blocks", "stages")


@dataclass(frozen=True)
class EncoderLayer:
    """A hooked encoder module: its name, the module, and how its output is laid out
    (``nchw``, ``nhwc`` (SAM ViT blocks) or ``nlc`` (tokens of a square grid, TinyViT))."""

    name: str
    module: Any
    layout: str
    kind: str = "block"  # "block", "stage" (a stage's output) or "io" (patch embedding, neck)
    #: part of the encoder's stem (the patch embedding, TinyViT's convolutional stage): its map
    #: survives re-drawn weights, so the ``deep`` selection leaves it out
    stem: bool = False


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
        out = [EncoderLayer("patch_embed", enc.patch_embed, "nchw", "io", stem=True)]
        for i, stage in enumerate(enc.layers):
            conv = not hasattr(stage.blocks[0], "attn")
            for j, block in enumerate(stage.blocks):
                out.append(EncoderLayer(f"stage{i}.block{j}", block, "nchw" if conv else "nlc", stem=conv))
            out.append(EncoderLayer(f"stage{i}", stage, "nlc" if getattr(stage, "downsample", None) is not None
                                    or not conv else "nchw", "stage", stem=conv))
        if hasattr(enc, "neck"):
            out.append(EncoderLayer("neck", enc.neck, "nchw", "io"))
        return out
    if enc is not None and hasattr(enc, "blocks") and hasattr(enc, "patch_embed"):  # SAM ViT
        out = [EncoderLayer("patch_embed", enc.patch_embed, "nhwc", "io", stem=True)]
        out += [EncoderLayer(f"block{j}", b, "nhwc") for j, b in enumerate(enc.blocks)]
        if hasattr(enc, "neck"):
            out.append(EncoderLayer("neck", enc.neck, "nchw", "io"))
        return out
    children = list((enc or root).named_children())
    if not children:
        raise ModelError(f"{getattr(segmenter, 'name', type(root).__name__)} has no sub-modules to hook")
    return [EncoderLayer(name, module, "nchw") for name, module in children]


def select_layers(layers: Sequence[EncoderLayer], which) -> List[EncoderLayer]:
    """``deep`` (every layer past the stem, :attr:`EncoderLayer.stem`), ``all``, ``blocks`` (blocks
    only), ``stages`` (stage outputs, patch embedding and neck), or a list / comma-separated string of
    layer names.  A selection that would leave no layer takes them all."""
    if isinstance(which, str) and which in SELECTIONS:
        keep = {"deep": lambda lay: not lay.stem, "all": lambda lay: True,
                "blocks": lambda lay: lay.kind == "block", "stages": lambda lay: lay.kind in ("stage", "io")}[which]
        return [lay for lay in layers if keep(lay)] or list(layers)
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
    f = f[:fh, :fw]
    inside_np = grid_box((fh, fw), box, image_shape)
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
    sims = similarities(f, rows)  # prototype[, prompt[, global, context]]
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

@dataclass(frozen=True)
class LayerSettings(CommonSettings):
    stage: int = setting(1, "layers (seed 002): 1 prototype similarity, 2 + prompt embedding, 3 four components with "
                            "spatial weighting", choices=STAGES, flag="--layer-stage")
    layers: str = setting("deep", "layers: deep (past the encoder's stem: the patch embedding and a convolutional "
                                  "first stage, whose maps random weights reproduce, left out), all, blocks, stages, "
                                  "or comma-separated layer names", flag="--layers")
    weights: LayerWeights = setting(None, "stage 2 and 3 weights", cli=False, default_factory=LayerWeights)
    metric_steps: int = setting(0, "points on the deletion/insertion curves, one encoder pass each (0: skip; "
                                   "the layer maps themselves cost one encoder pass)", minimum=0)

    def check(self) -> None:
        if not self.layers.strip():
            raise InputError("layers is empty; expected deep, all, blocks, stages or layer names")
        w = self.weights
        if not 0.0 <= w.floor <= 1.0 or not 0.0 <= w.prompt <= 1.0:
            raise InputError(f"layer weights {w}: floor and prompt must lie in [0, 1]")


@register
class LayerMaps(Explainer):
    """Similarity maps of every encoder layer and their fusion (seed 002); no perturbations.

    stage: 1 (prototype; the default), 2 (+ prompt embedding) or 3 (four components, spatially
    weighted).  Stage 3's weighting towards the box centre localises a structure in a tight box on
    its own, whatever the encoder says (docs/layers.md and the benchmark compare it with the
    weighting alone and with a re-drawn encoder), so the default shows the encoder's evidence
    unweighted.  As for every method, the maps are normalised inside the ROI and 0 outside it.
    layers: ``deep`` (the default: past the encoder's stem), ``all``, ``blocks``, ``stages`` or
    layer names; the fused map averages them; each layer's map is a component of the explanation,
    with its localisation row (against the target when given, else against the model's own mask).
    """

    name = "layers"
    title = "Layer maps"
    limits = ("layer maps show where MedSAM's encoder features resemble the structure's prototype, layer by layer; "
              "similarity is not causation: they do not show what changed the mask")
    Settings = LayerSettings
    perturbs = False
    randomise = "image_encoder"
    component_kind = "layer"
    localise_against_mask = True

    def cost(self, roi_extent: Optional[Tuple[float, float]] = None, grid: int = 256) -> int:
        return 1  # one hooked encoder pass

    def cost_equivalents(self, roi_extent: Optional[Tuple[float, float]], grid: int, share) -> float:
        return float(self.cost(roi_extent, grid))  # the hooked pass is a full pass

    def chosen_layers(self) -> List[EncoderLayer]:
        which = self.layers if self.layers in SELECTIONS else [n for n in self.layers.split(",") if n.strip()]
        return select_layers(encoder_layers(self.segmenter), which)

    def attribute(self, engine: PerturbationEngine) -> Attribution:
        image, prompt, roi, progress = engine.image, engine.prompt, engine.roi, engine.progress
        chosen = self.chosen_layers()
        progress.check()
        progress.stage(engine.stage, 1)
        embedding, grids = capture(self.segmenter, image, chosen)
        engine.offer_embedding(embedding)
        box = prompt_box(prompt, engine.reference)
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
        return Attribution(fused, {"stage": self.stage}, components=per_layer, passes={"hooked_encoder_passes": 1})

"""Activation reuse for LiteMedSAM's TinyViT encoder: a perturbed image that equals the cached
image outside a box is encoded by recomputing only what that box can reach.

What a change of the input inside a box reaches, layer by layer (boxes are ``(y0, x0, y1, x1)``,
half-open, on each layer's grid):

* 1x1 convolutions, batch norm, GELU, LayerNorm, the MLPs: the same box;
* a 3x3 convolution of stride ``s`` with zero padding 1: the output rows ``o`` with
  ``s*o - 1 <= b - 1`` and ``s*o + 1 >= a`` (:func:`conv_span`); the model's zero padding is
  reproduced by padding a crop only where it reaches past the grid's border;
* windowed attention: every window the box touches, whole (windows start at row and column 0; the
  bottom and right windows reach into zero padding exactly as in the model).

Stage 0 (patch embedding, two MBConv blocks and the first patch merging, on the 256 x 256 input)
is recomputed from a crop of the new input grown by its halo, so only its output is cached.  Each
later block keeps the unperturbed pass's post-attention residual and output; a changed pass
recomputes the touched windows and the local convolution's halo around them and splices them into
those caches (:class:`Delta`).  When a box covers a whole grid the same code computes the whole
layer, exactly as the model does.  The result equals the full pass to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

Box = Tuple[int, int, int, int]
Shape = Tuple[int, int]

#: share of one full encoder pass per part (stage 0; each later layer's blocks; the neck), measured
#: with one torch thread on a 2-core CPU; used only to decide whether reuse pays off
COST_SHARES = {"stage0": 0.46, "layer1": 0.19, "layer2": 0.22, "layer3": 0.15, "neck": 0.02}


def box_area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def union(boxes: List[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def full(shape: Shape) -> Box:
    return (0, 0, int(shape[0]), int(shape[1]))


def grow(box: Box, r: int, shape: Shape) -> Box:
    return (max(0, box[0] - r), max(0, box[1] - r), min(shape[0], box[2] + r), min(shape[1], box[3] + r))


def conv_span(a: int, b: int, n: int, stride: int) -> Tuple[int, int, int, int]:
    """A 3x3 convolution (padding 1, ``stride``) over ``n`` rows of which ``[a, b)`` changed: the
    output rows it changes ``[o0, o1)`` and the input rows those read ``[i0, i1)`` (``i0`` may be
    -1 and ``i1`` may pass ``n``: the model's zero padding)."""
    n_out = (n - 1) // stride + 1
    o0 = max(0, -((1 - a) // stride))
    o1 = min(n_out, b // stride + 1)
    return o0, o1, stride * o0 - 1, stride * (o1 - 1) + 2


def conv_boxes(box: Box, shape: Shape, stride: int) -> Tuple[Box, Box, Tuple[int, int, int, int], Shape]:
    """For a 3x3 convolution over a grid of ``shape`` whose ``box`` changed: the output box, the
    input box it reads (clipped), the zero padding (top, bottom, left, right) that replaces what
    the clipping removed, and the output grid's shape."""
    ys = conv_span(box[0], box[2], shape[0], stride)
    xs = conv_span(box[1], box[3], shape[1], stride)
    read = (max(0, ys[2]), max(0, xs[2]), min(shape[0], ys[3]), min(shape[1], xs[3]))
    pad = (read[0] - ys[2], ys[3] - read[2], read[1] - xs[2], xs[3] - read[3])
    out_shape = ((shape[0] - 1) // stride + 1, (shape[1] - 1) // stride + 1)
    return (ys[0], xs[0], ys[1], xs[1]), read, pad, out_shape


def window_box(box: Box, ws: int, shape: Shape) -> Box:
    """The windows of side ``ws`` (from the grid's corner) that ``box`` touches, clipped to the grid."""
    return (box[0] // ws * ws, box[1] // ws * ws, min(shape[0], -(-box[2] // ws) * ws),
            min(shape[1], -(-box[3] // ws) * ws))


def conv3(conv, t, pad: Tuple[int, int, int, int]):
    """``conv`` (a Conv2d with kernel 3) on ``t`` (B, C, h, w) zero-padded by ``pad`` (top, bottom,
    left, right) in place of the module's own padding."""
    import torch.nn.functional as F

    top, bottom, left, right = pad
    if any(pad):
        t = F.pad(t, (left, right, top, bottom))
    return F.conv2d(t, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def nchw(t):
    return t.permute(0, 3, 1, 2)


def nhwc(t):
    return t.permute(0, 2, 3, 1)


@dataclass
class Delta:
    """An activation (B, H, W, C): the cached unperturbed tensor ``base`` (1, H, W, C) with new
    values ``new`` (B, h, w, C) inside ``box``.  ``base`` may be None when ``box`` is the grid."""

    base: Any
    new: Any
    box: Box
    shape: Shape

    def crop(self, box: Box):
        """The activation inside ``box``."""
        y0, x0, y1, x1 = self.box
        if box == self.box:
            return self.new
        if box[0] >= y0 and box[1] >= x0 and box[2] <= y1 and box[3] <= x1:
            return self.new[:, box[0] - y0:box[2] - y0, box[1] - x0:box[3] - x0]
        out = self.base[:, box[0]:box[2], box[1]:box[3]].expand(len(self.new), -1, -1, -1).clone()
        a = (max(y0, box[0]), max(x0, box[1]), min(y1, box[2]), min(x1, box[3]))
        if a[2] > a[0] and a[3] > a[1]:
            out[:, a[0] - box[0]:a[2] - box[0], a[1] - box[1]:a[3] - box[1]] = \
                self.new[:, a[0] - y0:a[2] - y0, a[1] - x0:a[3] - x0]
        return out


# stage 0, from a crop of the input --------------------------------------------------------------
def stage0_box(enc, changed: Box, shape: Shape) -> Box:
    """The box of stage 0's output that a change of the input inside ``changed`` reaches."""
    layer = enc.layers[0]
    box = grow(changed, len(layer.blocks), shape)  # patch embedding 1x1; each MBConv one 3x3
    return conv_boxes(box, shape, layer.downsample.conv2.c.stride[0])[0]


def stage0_input_box(enc, out_box: Box, shape: Shape) -> Box:
    """The input box stage 0 reads to compute ``out_box`` of its output."""
    s = enc.layers[0].downsample.conv2.c.stride[0]
    need = (max(0, s * out_box[0] - 1), max(0, s * out_box[1] - 1), min(shape[0], s * (out_box[2] - 1) + 2),
            min(shape[1], s * (out_box[3] - 1) + 2))
    return grow(need, len(enc.layers[0].blocks), shape)


def stage0(enc, x, out_box: Box):
    """Stage 0's output (B, h, w, C) inside ``out_box``, from ``x`` (B, 3, H, W), reading only the
    input that box depends on; the MBConvs' zero padding applies where the crop meets the border."""
    layer, pm = enc.layers[0], enc.layers[0].downsample
    shape = tuple(x.shape[-2:])
    s = pm.conv2.c.stride[0]
    i0, i1 = s * out_box[0] - 1, s * (out_box[2] - 1) + 2
    j0, j1 = s * out_box[1] - 1, s * (out_box[3] - 1) + 2
    need = (max(0, i0), max(0, j0), min(shape[0], i1), min(shape[1], j1))
    box = grow(need, len(layer.blocks), shape)
    h = enc.patch_embed(x[:, :, box[0]:box[2], box[1]:box[3]])
    for blk in layer.blocks:
        pad = (int(box[0] == 0), int(box[2] == shape[0]), int(box[1] == 0), int(box[3] == shape[1]))
        inner = (box[0] + 1 - pad[0], box[1] + 1 - pad[2], box[2] - 1 + pad[1], box[3] - 1 + pad[3])
        t = blk.act1(blk.conv1(h))
        t = blk.act2(blk.conv2.bn(conv3(blk.conv2.c, t, pad)))
        t = blk.conv3(t)
        t = t + h[:, :, inner[0] - box[0]:inner[2] - box[0], inner[1] - box[1]:inner[3] - box[1]]
        h, box = blk.act3(t), inner
    h = h[:, :, need[0] - box[0]:need[2] - box[0], need[1] - box[1]:need[3] - box[1]]
    t = pm.act(pm.conv1(h))
    t = pm.act(pm.conv2.bn(conv3(pm.conv2.c, t, (need[0] - i0, i1 - need[2], need[1] - j0, j1 - need[3]))))
    return nhwc(pm.conv3(t))


# attention blocks, patch merging and the neck, on deltas -----------------------------------------
def window_attention(blk, x):
    """``blk``'s windowed attention on ``x`` (B, h, w, C) whose top-left corner is a window corner;
    the bottom and right are zero-padded to whole windows as in the model."""
    import torch.nn.functional as F

    ws = blk.window_size
    B, h, w, C = x.shape
    pb, pr = (ws - h % ws) % ws, (ws - w % ws) % ws
    if pb or pr:
        x = F.pad(x, (0, 0, 0, pr, 0, pb))
    nh, nw = (h + pb) // ws, (w + pr) // ws
    t = x.reshape(B, nh, ws, nw, ws, C).transpose(2, 3).reshape(B * nh * nw, ws * ws, C)
    t = blk.attn(t)
    t = t.view(B, nh, nw, ws, ws, C).transpose(2, 3).reshape(B, h + pb, w + pr, C)
    return t[:, :h, :w] if (pb or pr) else t


def block_boxes(blk, box: Box, shape: Shape) -> Tuple[Box, Box, Box]:
    """The attention windows ``box`` touches, the local convolution's input box around them, and the
    block's output box (what the change reaches)."""
    windows = window_box(box, blk.window_size, shape)
    out, read, _, _ = conv_boxes(windows, shape, 1)
    return windows, read, out


def attn_block(blk, x: Delta, cached: Optional[Tuple[Any, Any]]) -> Tuple[Delta, Any]:
    """One TinyViT block: attention on the touched windows, residual, local 3x3 convolution, MLP.
    ``cached``: the unperturbed (post-attention residual, output); None in the recording pass.
    Returns the output delta and the post-attention residual inside its box."""
    y_base, out_base = cached if cached is not None else (None, None)
    windows = window_box(x.box, blk.window_size, x.shape)
    xa = x.crop(windows)
    y = Delta(y_base, xa + window_attention(blk, xa), windows, x.shape)
    out_box, read, pad, _ = conv_boxes(windows, x.shape, 1)
    c = nhwc(blk.local_conv.bn(conv3(blk.local_conv.c, nchw(y.crop(read)), pad)))
    return Delta(out_base, c + blk.mlp(c), out_box, x.shape), y.new


def merge(pm, x: Delta, cached) -> Delta:
    """A patch merging (1x1, 3x3 depthwise of stride 1 or 2, 1x1) on a delta."""
    out_box, read, pad, out_shape = conv_boxes(x.box, x.shape, pm.conv2.c.stride[0])
    t = pm.act(pm.conv1(nchw(x.crop(read))))
    t = pm.act(pm.conv2.bn(conv3(pm.conv2.c, t, pad)))
    return Delta(cached, nhwc(pm.conv3(t)), out_box, out_shape)


def neck(enc, x: Delta, cached):
    """The neck (1x1, LayerNorm, 3x3, LayerNorm) on a delta: the features (B, 256, h, w), whole."""
    n = enc.neck
    out_box, read, pad, _ = conv_boxes(x.box, x.shape, 1)
    t = n[1](n[0](nchw(x.crop(read))))
    t = n[3](conv3(n[2], t, pad))
    if out_box == full(x.shape):
        return t
    out = cached.expand(len(t), -1, -1, -1).clone()
    out[:, :, out_box[0]:out_box[2], out_box[1]:out_box[3]] = t
    return out


# the two passes ------------------------------------------------------------------------------------
@dataclass
class Cache:
    """What the unperturbed pass leaves: its input (1, 3, H, W), stage 0's output, each later block's
    (post-attention residual, output) and each patch merging's output (channels last, batch 1), and
    the features."""

    x: Any
    stage0: Any
    blocks: List[List[Tuple[Any, Any]]] = field(default_factory=list)
    merges: List[Any] = field(default_factory=list)
    features: Any = None

    @property
    def nbytes(self) -> int:
        tensors = [self.x, self.stage0, self.features] + list(self.merges)
        tensors += [t for layer in self.blocks for pair in layer for t in pair]
        return int(sum(t.element_size() * t.nelement() for t in tensors if t is not None))

    def tree(self) -> dict:
        """The cache as a dict of tensors, lists, tuples and None (what ``torch.load(weights_only=True)``
        reads back); :meth:`from_tree` rebuilds it."""
        return {"x": self.x, "stage0": self.stage0, "blocks": [[tuple(p) for p in layer] for layer in self.blocks],
                "merges": list(self.merges), "features": self.features}

    @classmethod
    def from_tree(cls, tree: dict) -> "Cache":
        return cls(x=tree["x"], stage0=tree["stage0"], blocks=[[tuple(p) for p in layer] for layer in tree["blocks"]],
                   merges=list(tree["merges"]), features=tree["features"])


def record(enc, x) -> Cache:
    """The full pass on ``x`` (1, 3, H, W) by the same operations as :func:`changed`, keeping what
    it needs; ``Cache.features`` is the encoder's output."""
    shape = tuple(x.shape[-2:])
    box0 = stage0_box(enc, full(shape), shape)
    d = Delta(None, stage0(enc, x, box0), box0, (box0[2], box0[3]))
    cache = Cache(x=x, stage0=d.new)
    for layer in enc.layers[1:]:
        pairs = []
        for blk in layer.blocks:
            d, y = attn_block(blk, d, None)
            pairs.append((y, d.new))
        cache.blocks.append(pairs)
        if layer.downsample is not None:
            d = merge(layer.downsample, d, None)
            cache.merges.append(d.new)
    cache.features = neck(enc, d, None)
    return cache


def changed(enc, cache: Cache, x, box: Box):
    """Features (B, 256, h, w) of ``x`` (B, 3, H, W), which equals ``cache.x`` outside ``box``."""
    shape = tuple(x.shape[-2:])
    s0 = tuple(cache.stage0.shape[1:3])
    box0 = stage0_box(enc, box, shape)
    d = Delta(cache.stage0, stage0(enc, x, box0), box0, s0)
    merges = iter(cache.merges)
    for layer, pairs in zip(enc.layers[1:], cache.blocks):
        for blk, pair in zip(layer.blocks, pairs):
            d, _ = attn_block(blk, d, pair)
        if layer.downsample is not None:
            d = merge(layer.downsample, d, next(merges))
    return neck(enc, d, cache.features)


def reach(enc, box: Box, shape: Shape) -> List[Tuple[str, Box, Shape]]:
    """The box each part recomputes for a change inside ``box`` of the input grid ``shape``:
    ``("stage0", input box read, shape)``, then per later block its output box, per merging its
    output box, and the neck's."""
    out = [("stage0", stage0_input_box(enc, stage0_box(enc, box, shape), shape), shape)]
    b = stage0_box(enc, box, shape)
    grid = conv_boxes(full(shape), shape, enc.layers[0].downsample.conv2.c.stride[0])[3]
    for i, layer in enumerate(enc.layers[1:], start=1):
        for j, blk in enumerate(layer.blocks):
            windows, _, b = block_boxes(blk, b, grid)
            out.append((f"layer{i}.{j}", windows, grid))
        if layer.downsample is not None:
            b, _, _, grid = conv_boxes(b, grid, layer.downsample.conv2.c.stride[0])
            out.append((f"layer{i}.merge", b, grid))
    b = conv_boxes(b, grid, 1)[0]
    out.append(("neck", b, grid))
    return out


def relative_cost(enc, box: Box, shape: Shape) -> float:
    """Estimated cost of :func:`changed` for ``box`` as a share of a full pass (see COST_SHARES)."""
    parts = reach(enc, box, shape)
    total = COST_SHARES["stage0"] * box_area(parts[0][1]) / box_area(full(shape))
    for name, b, grid in parts[1:]:
        key = name.split(".")[0]
        if name.endswith("merge") or key == "neck":
            continue
        n = len(enc.layers[int(key[5:])].blocks)
        total += COST_SHARES[key] / n * box_area(b) / box_area(full(grid))
    return total + COST_SHARES["neck"]


def prune(enc, cache: Cache, shape: Shape) -> Cache:
    """Drop the cached activations no change can use: those of the parts that even a one-pixel
    change reaches whole (a part reached whole never reads its cache)."""
    needed = set()
    for p in range(shape[0]):
        needed |= {name for name, b, grid in reach(enc, (p, 0, p + 1, shape[1]), shape) if b != full(grid)}
    for p in range(shape[1]):
        needed |= {name for name, b, grid in reach(enc, (0, p, shape[0], p + 1), shape) if b != full(grid)}
    for i, pairs in enumerate(cache.blocks, start=1):
        cache.blocks[i - 1] = [pair if f"layer{i}.{j}" in needed else (None, None) for j, pair in enumerate(pairs)]
    cache.merges = [m if f"layer{i}.merge" in needed else None for i, m in enumerate(cache.merges, start=1)]
    return cache

"""PNG figures without a screen: slices in radiological display orientation with mask outlines."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .io import Geometry
from .volume import in_plane_axes

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]


def display_flips(geometry: Geometry, axis: int) -> Tuple[bool, bool]:
    """Row/column flips that show a slice the way radiologists read it: anterior (or superior) at
    the top, the patient's right on the image's left."""
    ras = geometry.direction_matrix * np.array([-1.0, -1.0, 1.0])[:, None]  # columns i, j, k in RAS
    col_of_axis = {0: 2, 1: 1, 2: 0}  # array axis -> ITK index column
    r, c = in_plane_axes(axis)
    row_dir, col_dir = ras[:, col_of_axis[r]], ras[:, col_of_axis[c]]
    # rows go downwards on screen: flip if increasing row points anterior or superior
    up = int(np.argmax(np.abs(row_dir)))
    flip_rows = row_dir[up] > 0 if up in (1, 2) else row_dir[up] < 0
    # columns go rightwards: patient's left on the right, superior... keep R on the left
    side = int(np.argmax(np.abs(col_dir)))
    flip_cols = col_dir[side] > 0 if side == 0 else col_dir[side] < 0
    return bool(flip_rows), bool(flip_cols)


def outline(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a 2D boolean mask."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay(image01: np.ndarray, masks: Sequence[Tuple[np.ndarray, Tuple[int, int, int]]],
            flips: Tuple[bool, bool] = (False, False), zoom: int = 2) -> np.ndarray:
    """RGB uint8 of a [0, 1] slice with coloured outlines of ``masks``."""
    g = (np.clip(image01, 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(g[..., None], 3, axis=2)
    if zoom > 1:
        rgb = rgb.repeat(zoom, 0).repeat(zoom, 1)
    for mask, colour in masks:
        m = mask.astype(bool)
        if zoom > 1:
            m = m.repeat(zoom, 0).repeat(zoom, 1)
        rgb[outline(m)] = colour
    if flips[0]:
        rgb = rgb[::-1]
    if flips[1]:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


def sheet(tiles: List[np.ndarray], titles: List[str], path, legend: Optional[Iterable[Tuple[str, tuple]]] = None,
          columns: int = 4) -> Path:
    """Arrange RGB tiles in a grid with titles and an optional colour legend; write a PNG atomically."""
    from PIL import Image, ImageDraw

    from .io import write_bytes_atomic

    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + columns - 1) // columns
    legend = list(legend or [])
    head, pad, foot = 18, 4, (18 * ((len(legend) + 2) // 3) + 6 if legend else 0)
    canvas = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + head + pad) + pad + foot), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for n, (tile, title) in enumerate(zip(tiles, titles)):
        x = pad + (n % columns) * (w + pad)
        y = pad + (n // columns) * (h + head + pad)
        draw.text((x + 2, y + 2), title, fill=(255, 255, 255))
        canvas.paste(Image.fromarray(tile), (x, y + head))
    y0 = rows * (h + head + pad) + pad
    for n, (name, colour) in enumerate(legend):
        x = pad + (n % 3) * (canvas.width // 3)
        y = y0 + (n // 3) * 18
        draw.rectangle([x, y + 3, x + 10, y + 13], fill=tuple(colour))
        draw.text((x + 16, y + 2), name, fill=(255, 255, 255))
    import io as _io

    buf = _io.BytesIO()
    canvas.save(buf, format="PNG")
    return write_bytes_atomic(path, buf.getvalue())


def colourmap(values01: np.ndarray) -> np.ndarray:
    """RGB uint8 of a [0, 1] map in the perceptual 'inferno' colour map."""
    import cv2

    v = (np.clip(values01, 0, 1) * 255).astype(np.uint8)
    return cv2.applyColorMap(v, cv2.COLORMAP_INFERNO)[..., ::-1]


def heat_tile(image01: np.ndarray, saliency01: np.ndarray, outlines, flips: Tuple[bool, bool] = (False, False),
              zoom: int = 2, alpha: float = 0.55, where: Optional[np.ndarray] = None) -> np.ndarray:
    """RGB uint8 of a [0, 1] saliency map blended over the slice inside ``where`` (default: where
    the map is > 0), with outlines.  Pass the ROI as ``where`` so the map's minimum, which is 0,
    is coloured too instead of showing the image through."""
    heat = colourmap(saliency01)
    grey = np.repeat((np.clip(image01, 0, 1) * 255)[..., None], 3, axis=2)
    inside = (saliency01 > 0) if where is None else (np.asarray(where, bool) | (saliency01 > 0))
    weight = alpha * inside[..., None]
    blend = (grey * (1 - weight) + heat * weight).astype(np.float32)
    big = blend.repeat(zoom, 0).repeat(zoom, 1).astype(np.uint8) if zoom > 1 else blend.astype(np.uint8)
    for m, colour in outlines:
        mm = m.astype(bool).repeat(zoom, 0).repeat(zoom, 1) if zoom > 1 else m.astype(bool)
        big[outline(mm)] = colour
    if flips[0]:
        big = big[::-1]
    if flips[1]:
        big = big[:, ::-1]
    return np.ascontiguousarray(big)


def layer_sheet(image01: np.ndarray, maps, mask: np.ndarray, path, flips: Tuple[bool, bool] = (False, False),
                columns: int = 6, target: Optional[np.ndarray] = None, focus: Optional[np.ndarray] = None,
                margin: int = 16, zoom: int = 3) -> Path:
    """PNG grid of per-layer maps (in forward order, titled by layer) over the slice, the mask
    outlined in green and, when given, the ground truth in yellow.  With ``focus`` (e.g. the ROI)
    each tile shows only the box around it grown by ``margin`` pixels, magnified ``zoom`` times."""
    outlines = [(mask, (60, 220, 75))] + ([(target, (255, 225, 25))] if target is not None else [])
    window = (slice(None), slice(None))
    if focus is not None and np.any(focus):
        rows, cols = np.nonzero(focus)
        h, w = image01.shape
        window = (slice(max(0, rows.min() - margin), min(h, rows.max() + margin + 1)),
                  slice(max(0, cols.min() - margin), min(w, cols.max() + margin + 1)))
    else:
        zoom = 1
    cut = [(np.asarray(m)[window], colour) for m, colour in outlines]
    names = list(maps)
    where = (np.ones(image01.shape, bool) if focus is None else np.asarray(focus, bool))[window]
    tiles = [heat_tile(image01[window], np.asarray(maps[n])[window], cut, flips, zoom=zoom, alpha=0.7, where=where)
             for n in names]
    return sheet(tiles, names, path, columns=min(columns, len(tiles)))


def saliency_panel(image01: np.ndarray, saliency01: np.ndarray, mask: np.ndarray, roi: Optional[np.ndarray],
                   path, title: str = "", flips: Tuple[bool, bool] = (False, False), zoom: int = 2,
                   alpha: float = 0.55) -> Path:
    """PNG of one explained slice: the image; the saliency over it (inside the ROI) with a colour
    bar; the mask outlined in green and the ROI in blue on both panels."""
    from PIL import Image, ImageDraw

    from .io import write_bytes_atomic

    outlines = [(mask, (60, 220, 75))] + ([(roi, (0, 130, 255))] if roi is not None else [])
    left = overlay(image01, outlines, flips, zoom)
    right = heat_tile(image01, saliency01, outlines, flips, zoom, alpha, where=roi)
    h, w = left.shape[:2]
    bar_w, pad, head = 14, 6, 18
    bar = colourmap(np.linspace(1, 0, h)[:, None].repeat(bar_w, 1))
    canvas = Image.new("RGB", (2 * w + 3 * pad + bar_w + 30, h + head + pad), (0, 0, 0))
    canvas.paste(Image.fromarray(left), (pad, head))
    canvas.paste(Image.fromarray(right), (2 * pad + w, head))
    canvas.paste(Image.fromarray(np.ascontiguousarray(bar)), (3 * pad + 2 * w, head))
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 3), title, fill=(255, 255, 255))
    draw.text((4 * pad + 2 * w + bar_w - 4, head), "1", fill=(255, 255, 255))
    draw.text((4 * pad + 2 * w + bar_w - 4, head + h - 12), "0", fill=(255, 255, 255))
    import io as _io

    buf = _io.BytesIO()
    canvas.save(buf, format="PNG")
    return write_bytes_atomic(path, buf.getvalue())

"""Layer maps (seed 002): hooks on every encoder layer, three stages, fused map, per-layer table.

The toy's encoder carries the known region in its weights, not in the image: a learned marker
added to the first feature channel inside a square, on an image of pure noise.  So a map can only
find the square by reading the encoder, and a re-drawn encoder must lose it (Adebayo et al.).
"""
import json

import numpy as np
import pytest
import torch

from xaiseg.errors import InputError, ModelError
from xaiseg.explain import make_explainer
from xaiseg.explain.layers import (EncoderLayer, LayerMaps, capture, encoder_layers, select_layers,
                                   spatial_weight)
from xaiseg.metrics import normalise01, peak, spearman
from xaiseg.models.base import Embedding, PromptableSegmenter, SlicePrompt, randomized_copy
from xaiseg.progress import CancelToken, Cancelled, Progress

SIZE = 64
SQUARE = (slice(14, 26), slice(34, 46))  # rows, columns: the region the toy's weights mark
BOX = (18.0, 8.0, 57.0, 47.0)  # x0, y0, x1, y1: holds the square off its centre (centre weighting can't find it)


class AddMarker(torch.nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        marker = torch.zeros(1, channels, SIZE, SIZE)
        marker[0, 0, SQUARE[0], SQUARE[1]] = 4.0
        self.marker = torch.nn.Parameter(marker)

    def forward(self, x):
        return x + self.marker


class MarkedEncoder(torch.nn.Module):
    def __init__(self, channels: int = 8, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = torch.nn.Conv2d(1, channels, 3, padding=1)
        self.mark = AddMarker(channels)
        self.head = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 1), torch.nn.Tanh())
        with torch.no_grad():
            w = torch.randn(self.embed.weight.shape, generator=g)
            self.embed.weight.copy_(0.3 * (w - w.mean(dim=(2, 3), keepdim=True)))  # edge-like: blind to the mean
            self.embed.bias.zero_()
            self.head[0].weight.copy_(torch.eye(channels)[:, :, None, None])
            self.head[0].bias.zero_()

    def forward(self, x):
        return self.head(self.mark(self.embed(x)))


class MarkedSquareToy(PromptableSegmenter):
    """Toy segmenter: its mask is the marked square whatever the image (channel 0 of the features > 0.8)."""

    name = "marked-square toy"

    def __init__(self):
        self.module = torch.nn.Module()
        self.module.image_encoder = MarkedEncoder()
        self.module.eval()
        self.weights_sha256 = "toy"

    def embed(self, image):
        x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
        with torch.inference_mode():
            feats = self.module.image_encoder(x)
        return Embedding(feats, image.shape, image.shape, 1.0)

    def decode(self, embedding, prompt):
        return (embedding.features[0, 0] - 0.8).numpy()


def noise(seed=3):
    return np.random.default_rng(seed).random((SIZE, SIZE)).astype(np.float32)


def square_mask():
    m = np.zeros((SIZE, SIZE), bool)
    m[SQUARE] = True
    return m


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_every_stage_finds_the_marked_square_and_a_redrawn_encoder_loses_it(stage):
    toy, image, truth = MarkedSquareToy(), noise(), square_mask()
    ex = LayerMaps(toy, stage=stage).explain(image, SlicePrompt(BOX), target=truth)
    assert ex.reference.sum() == truth.sum() and (ex.reference == truth).all()  # the toy's mask is the square
    assert truth[peak(ex.saliency)], "the fused map must peak in the marked square"
    table = {r["layer"]: r for r in ex.component_table}
    assert list(table) == ["embed", "mark", "head"]
    # the marker enters at 'mark': from there on the layers point at the square; 'embed' only sees noise
    assert table["mark"]["pointing_game"] and table["head"]["pointing_game"]
    assert table["mark"]["iou_target"] > 0.8 and table["embed"]["iou_target"] < 0.3
    assert ex.best_component in ("mark", "head")
    assert ex.metrics["localised_against"] == "target" and ex.metrics["pointing_game"]
    assert ex.n_evaluations == 0 and ex.record["evaluations"]["hooked_encoder_passes"] == 1

    redrawn = randomized_copy(toy, seed=5, part="image_encoder")
    lost = LayerMaps(redrawn, stage=stage).explain(image, SlicePrompt(BOX), target=truth)
    assert not truth[peak(lost.saliency)]

    def contrast(m):  # mean map value inside the square minus outside it
        return float(m[truth].mean() - m[~truth].mean())

    # stage 3 weights towards the box centre: that weighting alone is the floor a blind map reaches
    prior = contrast(normalise01(spatial_weight(truth.shape, BOX, 0.3))) if stage == 3 else 0.0
    assert contrast(ex.saliency) > contrast(lost.saliency) + 0.2 and abs(contrast(lost.saliency)) < prior + 0.1
    assert max(r["iou_target"] for r in lost.component_table) < 0.3


def test_same_input_same_maps_and_the_sanity_score_is_low():
    toy, image = MarkedSquareToy(), noise()
    a = LayerMaps(toy, stage=2, sanity=True).explain(image, SlicePrompt(BOX))
    b = LayerMaps(toy, stage=2).explain(image, SlicePrompt(BOX))
    assert np.array_equal(a.saliency, b.saliency)
    for name in a.components:
        assert np.array_equal(a.components[name], b.components[name])
    # without a target the table is measured against the model's own mask (the square here)
    assert a.metrics["localised_against"] == "model mask" and a.metrics["pointing_game"]
    assert a.metrics["sanity_similarity"] < 0.5
    assert a.metrics["sanity_similarity"] == pytest.approx(spearman(a.saliency, LayerMaps(
        randomized_copy(toy, seed=1, part="image_encoder"), stage=2).explain(image, SlicePrompt(BOX)).saliency))


def test_maps_live_in_the_roi():
    toy, image = MarkedSquareToy(), noise()
    roi = np.zeros((SIZE, SIZE), bool)
    roi[4:40, 20:60] = True
    ex = LayerMaps(toy).explain(image, SlicePrompt(BOX), roi=roi)
    assert not ex.saliency[~roi].any() and ex.saliency[roi].max() == pytest.approx(1.0)
    for m in ex.components.values():
        assert not m[~roi].any()


def test_hooks_are_removed_after_success_and_after_a_failing_pass():
    toy = MarkedSquareToy()
    mods = list(toy.module.modules())
    LayerMaps(toy).explain(noise(), SlicePrompt(BOX))
    assert all(not m._forward_hooks for m in mods)

    class Broken(MarkedSquareToy):
        def embed(self, image):
            self.module.image_encoder(torch.zeros(1, 1, SIZE, SIZE))  # the hooks fire ...
            raise RuntimeError("encoder failed")  # ... then the pass fails

    broken = Broken()
    with pytest.raises(RuntimeError, match="encoder failed"):
        capture(broken, noise(), encoder_layers(broken))
    assert all(not m._forward_hooks for m in broken.module.modules())


def test_cancel_raises_and_bad_settings_name_the_value():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        LayerMaps(MarkedSquareToy()).explain(noise(), SlicePrompt(BOX), progress=Progress(token))
    with pytest.raises(InputError, match="stage 4"):
        LayerMaps(stage=4)
    with pytest.raises(InputError, match="nope.*embed, mark, head"):
        select_layers(encoder_layers(MarkedSquareToy()), "embed,nope")
    with pytest.raises(ModelError, match="no segmenter"):
        LayerMaps().explain(noise(), SlicePrompt(BOX))
    with pytest.raises(InputError, match="does not match"):
        LayerMaps(MarkedSquareToy()).explain(noise(), SlicePrompt(BOX), target=np.ones((3, 3), bool))


def test_spatial_weight_is_one_at_the_box_centre_and_the_floor_far_away():
    w = spatial_weight((200, 200), (90.0, 90.0, 110.0, 110.0), 0.3)
    assert w[100, 100] == pytest.approx(1.0, abs=1e-3) and w[0, 0] == pytest.approx(0.3, abs=1e-3)


def test_litemedsam_and_sam_vit_layers_are_all_hooked_in_one_pass(litemedsam):
    layers = encoder_layers(litemedsam)
    names = [lay.name for lay in layers]
    # TinyViT: patch embedding, 2 + 2 + 6 + 2 blocks, 4 stage outputs, neck
    assert names[0] == "patch_embed" and names[-1] == "neck" and len(names) == 18
    assert sum(lay.kind == "block" for lay in layers) == 12 and sum(lay.kind == "stage" for lay in layers) == 4
    assert [lay.name for lay in select_layers(layers, "stages")] == ["patch_embed", "stage0", "stage1", "stage2",
                                                                     "stage3", "neck"]
    # the default leaves out the stem: the patch embedding and the convolutional stage 0
    assert [lay.name for lay in select_layers(layers, "deep")] == names[4:] and names[4] == "stage1.block0"
    assert {lay.name for lay in layers if lay.stem} == {"patch_embed", "stage0.block0", "stage0.block1", "stage0"}
    image = np.zeros((120, 90), np.float32)
    image[40:80, 30:60] = 1.0
    embedding, grids = capture(litemedsam, image, layers)
    assert set(grids) == set(names)
    assert tuple(grids["patch_embed"].shape) == (256, 256, 64) and tuple(grids["stage1"].shape) == (64, 64, 160)
    assert torch.equal(grids["neck"].permute(2, 0, 1)[None], embedding.features)  # the neck is the image embedding
    assert all(not m._forward_hooks for m in litemedsam.module.modules())

    from xaiseg.models.medsam import SamArch, build_sam

    class TinySam(PromptableSegmenter):
        name = "tiny SAM ViT (random)"

        def __init__(self):
            self.module = build_sam(SamArch(img_size=64, embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,),
                                            window_size=2, patch_size=8, prompt_dim=32, decoder_mlp_dim=64,
                                            decoder_heads=2))

        def embed(self, image):
            x = torch.from_numpy(np.ascontiguousarray(image[:64, :64]))[None, None].repeat(1, 3, 1, 1)
            with torch.inference_mode():
                return Embedding(self.module.image_encoder(x), (64, 64), (64, 64), 1.0)

        def decode(self, embedding, prompt):
            return np.zeros((64, 64), np.float32)

    sam = TinySam()
    vit = encoder_layers(sam)
    assert [lay.name for lay in vit] == ["patch_embed", "block0", "block1", "neck"]
    assert {lay.layout for lay in vit} == {"nhwc", "nchw"}
    _, vgrids = capture(sam, np.random.default_rng(0).random((64, 64)).astype(np.float32), vit)
    assert tuple(vgrids["block1"].shape) == (8, 8, 32) and tuple(vgrids["neck"].shape) == (8, 8, 32)
    # stage 2 reads SAM's prompt encoder: it runs on the tiny model
    ex = LayerMaps(sam, stage=2).explain(np.random.default_rng(0).random((64, 64)).astype(np.float32),
                                         SlicePrompt((10.0, 10.0, 40.0, 40.0)))
    assert set(ex.components) == {"block0", "block1", "neck"}  # the default: past the patch embedding
    assert [lay.name for lay in select_layers(vit, "all")] == ["patch_embed", "block0", "block1", "neck"]


def test_an_explicit_layer_list_on_any_segmenter():
    class Own(MarkedSquareToy):
        def encoder_layers(self):
            return [EncoderLayer("only", self.module.image_encoder.mark, "nchw")]

    ex = make_explainer("layers", Own(), layers="all").explain(noise(), SlicePrompt(BOX))
    assert list(ex.components) == ["only"]
    # a model's own layers carry no stem mark: the default takes them all
    assert list(make_explainer("layers", Own()).explain(noise(), SlicePrompt(BOX)).components) == ["only"]
    assert json.loads(json.dumps(ex.settings))["method"] == "layers"


# --- the real model on real anatomy ---------------------------------------------------------------

@pytest.fixture(scope="module")
def caudate_layers(litemedsam):
    """Layer maps of every layer (default stage 1, in the default embedding ROI) on every third MNI152 slice through
    the left caudate, tight atlas boxes, Harvard-Oxford > 50 % as the truth."""
    from xaiseg.pipeline import Session
    from xaiseg.sample_data import load_mni_atlas
    from xaiseg.volume import LabelBoxPrompt

    sample = load_mni_atlas(["Left_Caudate"])
    truth = sample.mask("Left_Caudate")
    ks = np.unique(np.nonzero(truth)[0])[2:-2:3]
    labels = truth.astype(np.uint8)
    labels[[k for k in range(labels.shape[0]) if k not in ks]] = 0
    session = Session(sample.image, litemedsam)
    seg = session.segment(LabelBoxPrompt(labels, 1, 0, "atlas"), name="left_caudate")
    run = session.explain(seg, [make_explainer("layers", layers="all")], target=truth)  # every layer's row
    return session, seg, run, truth, [int(k) for k in ks]


def test_the_best_layer_points_at_the_caudate_on_80_percent_of_slices(caudate_layers):
    from xaiseg.explain_volume import slice_prompt as _slice_prompt

    session, seg, run, truth, ks = caudate_layers
    assert run.slices == ks and len(ks) == 10
    summary = run.metrics()["methods"]["layers"]["layer_summary"]
    assert len(summary["layers"]) == 18
    hit = {name: row["pointing_game"] for name, row in summary["layers"].items()}
    best = max(hit, key=hit.get)
    assert hit[best] >= 0.8, hit  # issue 5: the best layer's pointing game on >= 80 % of slices
    # the same layer with its encoder re-drawn: the maps no longer find the caudate
    redrawn = LayerMaps(randomized_copy(session.segmenter, seed=1, part="image_encoder"), layers="all")
    runs = {r.index: r for r in seg.slices}
    lost = []
    for k in ks:
        ex = redrawn.explain(session.volume_segmenter.slice(k), _slice_prompt(runs[k].prompt), roi=run.roi[k].astype(bool),
                             target=truth[k])
        lost.append(next(r["pointing_game"] for r in ex.component_table if r["layer"] == best))
    assert np.mean(lost) <= hit[best] - 0.4, (best, lost)
    assert run.record["evaluations"]["perturbed_encoder_passes"]["layers"] == 0


def test_cli_layers_writes_each_layer_and_the_table(caudate_layers, tmp_path, litemedsam, monkeypatch):
    from xaiseg.cli import main
    from xaiseg.io import read_volume, write_volume

    session, seg, run, truth, ks = caudate_layers
    vol = session.volume
    k = ks[4]
    src = write_volume(vol, vol.array, tmp_path / "mni.nii.gz")
    lab = write_volume(vol, truth.astype(np.uint8), tmp_path / "caudate.nii.gz")
    # the boxes from slices k and k + 1 only (not every caudate slice): one slice explained, one
    # segmented and not explained, whose layer maps must stay empty
    one = np.zeros(truth.shape, np.uint8)
    one[k:k + 2] = truth[k:k + 2]
    box = write_volume(vol, one, tmp_path / "caudate_k.nii.gz")
    monkeypatch.setattr("xaiseg.models.load_segmenter", lambda kind, **kw: litemedsam)
    out = tmp_path / "out"
    rc = main(["explain", str(src), "--box-from", str(box), "--label", "1", "--method", "layers", "--layers", "stages",
               "--layer-stage", "2", "--slices", str(k), "--ground-truth", str(lab), "--name", "lc", "-q",
               "-o", str(out)])
    assert rc == 0
    doc = json.loads((out / "lc_metrics.json").read_text())
    entry = doc["methods"]["layers"]
    assert entry["settings"]["stage"] == 2 and entry["settings"]["layers"] == "stages"
    names = ["patch_embed", "stage0", "stage1", "stage2", "stage3", "neck"]
    assert list(entry["files"]["layers"]) == names and entry["layer_summary"]["best_layer"] in names
    assert [r["layer"] for r in entry["slices"][str(k)]["layers"]] == names
    fused = read_volume(out / entry["files"]["saliency"])
    assert fused.array.shape == vol.shape and np.allclose(fused.geometry.spacing, vol.geometry.spacing)
    for name in names:
        layer = read_volume(out / entry["files"]["layers"][name]).array
        assert layer[k].max() == pytest.approx(1.0) and not np.delete(layer, k, axis=0).any()
    assert (out / f"lc_layers_layers_k{k:03d}.png").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

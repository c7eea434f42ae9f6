"""The optional pieces of the explainers with their real dependencies: shap beside slicer-core (and
beside a Slicer-like ``slicer`` module), CLIP ROIs from a tiny CLIP model saved in the test, and
the metrics' known answers."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from xaiseg import metrics
from xaiseg.errors import InputError


def test_shap_and_slicer_core_work_in_one_process():
    code = textwrap.dedent("""
        import numpy as np
        import slicer                                   # slicer-core: real MRML
        scene = slicer.vtkMRMLScene()
        slicer.mrmlScene = scene
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ct")
        from xaiseg.explain.shap_import import import_shap
        shap = import_shap()
        f = lambda z: z @ np.array([1.0, 2.0, -1.0])
        values = shap.KernelExplainer(f, np.zeros((1, 3))).shap_values(np.ones((1, 3)), nsamples=8, silent=True)
        assert np.allclose(np.ravel(values), [1.0, 2.0, -1.0]), values
        assert sys.modules["slicer"] is slicer and scene.GetNodeByID(node.GetID()) is not None
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_shap_imports_while_a_slicer_application_module_shadows_pypi_slicer(tmp_path):
    # Inside 3D Slicer, `import slicer` is the application's module, which has no Alias/Obj/Slicer.
    app = tmp_path / "app" / "slicer"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("APPLICATION = 'stand-in for the 3D Slicer application module'\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path / 'app')!r})
        import slicer
        assert not hasattr(slicer, "Alias")
        try:
            import shap  # what fails inside Slicer
        except ImportError:
            pass
        else:
            raise SystemExit("plain import shap was expected to fail here")
        for name in [m for m in sys.modules if m == "shap" or m.startswith("shap.")]:
            del sys.modules[name]
        from xaiseg.explain.shap_import import import_shap
        shap = import_shap()
        assert sys.modules["slicer"] is slicer and slicer.APPLICATION
        import numpy as np
        v = shap.KernelExplainer(lambda z: z.sum(1), np.zeros((1, 2))).shap_values(np.ones((1, 2)), silent=True)
        assert np.allclose(np.ravel(v), [1, 1])
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def tiny_clip(folder):
    """A random CLIP model and a character-level tokenizer, saved as a user's weights folder would be."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_clip_roi_runs_end_to_end_on_a_tiny_clip_model(tmp_path):
    import sys as _sys
    _sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from toys import SquareEvidence, evidence_image
    from xaiseg.explain import make_explainer
    from xaiseg.models.base import SlicePrompt
    from xaiseg.roi import RoiConfig, RoiFinder
    from xaiseg.roi.clip import ClipRoi

    folder = tiny_clip(tmp_path / "clip")
    image = evidence_image()
    clip = ClipRoi(str(folder), ["caudate nucleus", "brain"], sigma=2.0, threshold=0.5)
    sims = clip.similarity(image)
    assert len(sims) == 2 and all(s.shape == image.shape for s in sims)
    assert all(np.all((s >= -1.0001) & (s <= 1.0001)) for s in sims)  # cosine similarities
    roi = clip.roi(image)
    assert roi.any() and not roi.all()
    prompt = SlicePrompt(box=(36, 36, 55, 55))
    found, source = RoiFinder(RoiConfig("clip", clip_model=str(folder), clip_prompts=("caudate nucleus",))).find(
        image, prompt, np.zeros(image.shape, bool))
    assert source == "clip" and found.shape == image.shape
    ex = make_explainer("occlusion", SquareEvidence(), patch=16, stride=8, grid="image", metric_steps=0).explain(
        image, prompt, roi=found, roi_source=source)
    assert ex.roi_source == "clip" and not ex.saliency[~found].any()


def test_metric_known_answers():
    a = np.zeros((4, 4), bool)
    a[:2, :2] = True
    b = np.zeros((4, 4), bool)
    b[:2, :] = True
    assert metrics.dice(a, b) == pytest.approx(2 * 4 / (4 + 8))
    assert metrics.iou(a, b) == pytest.approx(4 / 8)
    assert metrics.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    s = np.zeros((4, 4))
    s[0, 1] = 2.0
    s[3, 3] = 1.0
    assert metrics.pointing_game(s, a) and not metrics.pointing_game(s, ~a)
    assert metrics.energy_inside(s, a) == pytest.approx(2 / 3)
    # top-4 pixels: (0,1), (3,3), then the first zeros (0,0), (0,2): 2 shared with a, union 6
    assert metrics.thresholded_iou(s, a) == pytest.approx(2 / 6)
    assert metrics.spearman(np.arange(5.0), np.arange(5.0) ** 3) == pytest.approx(1.0)
    assert metrics.spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)
    assert metrics.curve_auc([0, 0.5, 1], [1, 0, 0]) == pytest.approx(0.25)
    plateau = np.zeros((5, 5))
    plateau[1:4, 1:4] = 1.0
    assert metrics.peak(plateau) == (2, 2)
    with pytest.raises(InputError, match="shapes"):
        metrics.dice(a, np.zeros((2, 2)))


def test_top_region_takes_the_highest_pixels_and_breaks_ties_by_position():
    from xaiseg.metrics import top_region

    s = np.array([[1.0, 3.0, 2.0], [3.0, 0.0, 2.0]])
    assert top_region(s, 1).tolist() == [[False, True, False], [False, False, False]]  # first of the two 3s
    assert top_region(s, 3).tolist() == [[False, True, True], [True, False, False]]  # 3, 3, then the first 2
    assert top_region(s, 0).sum() == 0 and top_region(s, 99).all()

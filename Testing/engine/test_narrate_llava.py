"""The LLaVA narrator end to end on a tiny random LlavaConfig model built and saved here.

Its text is noise; the tests check the plumbing (image and findings reach the model, the answer
is decoded, the report carries it) and that the checker marks every number and anatomical name
the findings do not contain.  The vocabulary is mostly numbers and organ names, so whatever the
random model writes is full of claims to check.
"""
from __future__ import annotations

import json
import re

import pytest

from test_narrate_runs import MNI_NAME, copy_run, mni_run
from xaiseg.errors import WeightsMissingError
from xaiseg.narrate import ReportOptions, build_findings, build_report
from xaiseg.narrate.checker import findings_numbers
from xaiseg.narrate.llava import LlavaNarrator
from xaiseg.narrate.report import report_images

WORDS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "the", "is", "in", ".", "mL", "saliency", "mask",
         "liver", "spleen", "kidney", "caudate", "left", "right", "31337.5", "4242", "0.5", "88%"]
ORGANS_NOT_IN_FINDINGS = {"liver", "spleen", "kidney"}
NUMBERS = {"31337.5", "4242", "0.5", "88%"}


def build_tiny_llava(folder):
    """Save a LLaVA model (tiny CLIP vision tower + tiny Llama) and its processor into ``folder``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    template = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                "ASSISTANT:")
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=template)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    text = LlamaConfig(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=WORDS.index("<image>"),
                         image_seq_length=16, vision_feature_layer=-1)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("llava"))


def test_llava_narrator_plumbing_and_marks(tiny_llava, tmp_path):
    run = copy_run(mni_run(), tmp_path / "run")
    findings = build_findings(run)
    from xaiseg.narrate.findings import RunDir

    images = report_images(findings, RunDir(run))
    assert images and images[0].path.name == f"{MNI_NAME}_occlusion_k{findings['explained_slices'][0]:03d}.png"
    narrator = LlavaNarrator(tiny_llava, max_new_tokens=24)
    narrative = narrator.narrate(findings, images)
    # the image went through the processor at the vision tower's size, and the findings are in the prompt
    assert narrator.last_inputs["pixel_values_shape"] == (1, 3, 32, 32)
    assert narrator.last_inputs["new_tokens"] >= 1
    prompt = narrator.last_inputs["prompt"]
    assert "<image>" in prompt and MNI_NAME in prompt and f'"volume_ml":{findings["mask"]["volume_ml"]}' in prompt
    assert str(run) not in prompt, "paths must not reach the model"
    assert narrative.model_written and narrative.narrator == "llava" and narrative.images_sent == [images[0].path.name]
    text = narrative.text
    words = text.split()
    assert words and set(words) <= set(WORDS), text
    # every vocabulary number and organ the model wrote must be marked unsupported; "caudate" is supported
    claims = {(c.kind, c.text): c.supported for c in narrative.claims}
    found = [w for w in words if w in NUMBERS | ORGANS_NOT_IN_FINDINGS]
    assert found, f"the tiny model wrote no claim to check: {text!r}"
    values = findings_numbers(findings)
    expected = {"31337.5": False, "4242": False, "0.5": any(abs(v - 0.5) <= 0.05 for v in values),
                "88%": any(abs(100 * v - 88) <= 0.5 for v in values)}
    assert expected["0.5"], "findings hold the saliency threshold 0.5"
    for w in found:
        kind = "anatomy" if w in ORGANS_NOT_IN_FINDINGS else "number"
        matching = [ok for (k, t), ok in claims.items() if k == kind and t.split()[-1] == w]
        assert matching, f"{w!r} in {text!r} was not checked"
        want = False if kind == "anatomy" else expected[w]
        assert all(ok == want for ok in matching), f"{w!r}: marked {matching}, expected supported={want}"
    for (kind, t), ok in claims.items():
        if kind == "anatomy" and t.split()[-1] == "caudate" and t.split()[0] != "right":
            assert ok, f"{t!r} is in findings (Left_Caudate) but was marked"


def test_llava_report_marks_unsupported_claims_in_html(tiny_llava, tmp_path):
    run = copy_run(mni_run(), tmp_path / "run")
    paths = build_report(run, ReportOptions(narrator="llava", llava_model=str(tiny_llava), max_new_tokens=24))
    report = json.loads(paths["report_json"].read_text())
    nar = report["narrative"]
    assert nar["narrator"] == "llava" and nar["model_written"] is True and nar["unsupported"]
    page = paths["html"].read_text()
    marks = re.findall(r'<mark class="unsupported" title="[^"]*">([^<]*)</mark>', page)
    assert sorted(marks) == sorted(nar["unsupported"])
    assert "Written by a language model (llava)" in page


def test_llava_missing_model_folder(tmp_path):
    with pytest.raises(WeightsMissingError, match="no config.json.*save_pretrained"):
        LlavaNarrator(tmp_path / "nowhere")

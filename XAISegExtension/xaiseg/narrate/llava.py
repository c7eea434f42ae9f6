"""LLaVA narrator: transformers' LlavaForConditionalGeneration and its processor from a local folder.

The model sees one overlay image (the leading method's slice with the strongest peak) and the
findings as JSON.  Nothing is downloaded: ``model_path`` is a folder saved with
``save_pretrained`` (model + processor), e.g. a copy of llava-hf/llava-1.5-7b-hf.  Its text is
checked against findings and unsupported numbers and names are marked in the report.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..errors import InputError, ModelError, WeightsMissingError, require
from .base import SYSTEM_PROMPT, Narrative, Narrator, ReportImage, user_prompt
from .findings import model_context


class LlavaNarrator(Narrator):
    """``LlavaNarrator(path).narrate(findings, images)``; greedy decoding unless ``generate_kwargs`` say otherwise."""

    name = "llava"
    model_written = True

    def __init__(self, model_path, device: str = "cpu", max_new_tokens: int = 200,
                 generate_kwargs: Optional[Dict[str, Any]] = None, dtype: Optional[str] = None) -> None:
        self.model_path = Path(model_path)
        if not (self.model_path / "config.json").is_file():
            raise WeightsMissingError(f"LLaVA model folder {self.model_path} has no config.json; expected a folder "
                                      "written by save_pretrained (model and processor), e.g. a local copy of "
                                      "llava-hf/llava-1.5-7b-hf")
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens {max_new_tokens} must be at least 1")
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.dtype = dtype
        self._model = None
        self._processor = None
        self.last_inputs: Dict[str, Any] = {}

    def load(self):
        if self._model is None:
            transformers = require("transformers", "llava", "the LLaVA narrator")
            import torch

            try:
                self._processor = transformers.AutoProcessor.from_pretrained(str(self.model_path))
                kwargs = {"dtype": getattr(torch, self.dtype)} if self.dtype else {}
                self._model = transformers.LlavaForConditionalGeneration.from_pretrained(
                    str(self.model_path), **kwargs).to(self.device).eval()
            except (OSError, ValueError, KeyError) as exc:
                raise ModelError(f"could not load LLaVA from {self.model_path} ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); expected a LLaVA model and its "
                                 "processor saved with save_pretrained") from exc
        return self._model, self._processor

    def _prompt_text(self, processor, text: str) -> str:
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        if getattr(processor, "chat_template", None):
            return processor.apply_chat_template(conversation, add_generation_prompt=True)
        token = getattr(processor, "image_token", "<image>")
        return f"USER: {token}\n{text} ASSISTANT:"

    def narrate(self, findings: dict, images: Sequence[ReportImage]) -> Narrative:
        from PIL import Image
        import io

        import torch

        if not images:
            raise ModelError("the LLaVA narrator needs an overlay image of the run; the run directory has no PNG")
        model, processor = self.load()
        image = images[0]
        pil = Image.open(io.BytesIO(image.png_bytes())).convert("RGB")
        text = SYSTEM_PROMPT + "\n\n" + user_prompt(model_context(findings))
        prompt = self._prompt_text(processor, text)
        t0 = time.perf_counter()
        try:
            inputs = processor(images=pil, text=prompt, return_tensors="pt").to(self.device)
            kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=False)
            kwargs.update(self.generate_kwargs)
            with torch.no_grad():
                out = model.generate(**inputs, **kwargs)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise ModelError(f"LLaVA generation failed ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
        n_in = inputs["input_ids"].shape[1]
        answer = processor.decode(out[0, n_in:], skip_special_tokens=True)
        self.last_inputs = {"prompt": prompt, "pixel_values_shape": tuple(inputs["pixel_values"].shape),
                            "input_tokens": int(n_in), "new_tokens": int(out.shape[1] - n_in)}
        cfg = model.config
        return self.finish(answer, findings, prompt=prompt, images_sent=[image.path.name],
                           seconds=time.perf_counter() - t0,
                           model={"name": "llava", "path": self.model_path.name,
                                  "architecture": type(model).__name__,
                                  "text_model": getattr(getattr(cfg, "text_config", None), "model_type", None),
                                  "max_new_tokens": self.max_new_tokens})

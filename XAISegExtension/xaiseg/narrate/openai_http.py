"""Narrator over an OpenAI-compatible chat endpoint that accepts images (Ollama, vLLM, LM Studio, ...).

Off unless configured: base URL and model come from arguments or ``XAISEG_OPENAI_BASE_URL`` /
``XAISEG_OPENAI_MODEL``; the key (optional for local servers) from ``XAISEG_OPENAI_API_KEY``.
The request holds the rendered overlay slices (PNG re-encoded from pixels) and
:func:`~xaiseg.narrate.findings.model_context` - numbers and names, no paths, dates, DICOM tags or
run record - and nothing else.  Network failures raise :class:`NarratorError` with what to check.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import List, Optional, Sequence
from urllib.parse import urlparse

from ..errors import InputError
from .base import SYSTEM_PROMPT, Narrative, Narrator, NarratorError, ReportImage, user_prompt
from .findings import model_context

ENV_BASE_URL = "XAISEG_OPENAI_BASE_URL"
ENV_MODEL = "XAISEG_OPENAI_MODEL"
ENV_KEY = "XAISEG_OPENAI_API_KEY"


class OpenAINarrator(Narrator):
    """POST ``{base_url}/chat/completions`` with the overlay image(s) and findings."""

    name = "openai"
    model_written = True

    def __init__(self, base_url: Optional[str] = None, model: Optional[str] = None, api_key: Optional[str] = None,
                 timeout: float = 120.0, max_images: int = 2, max_tokens: int = 400,
                 temperature: float = 0.0) -> None:
        base_url = base_url or os.environ.get(ENV_BASE_URL)
        model = model or os.environ.get(ENV_MODEL)
        if not base_url or not model:
            missing = [n for n, v in (("--openai-base-url / " + ENV_BASE_URL, base_url),
                                      ("--openai-model / " + ENV_MODEL, model)) if not v]
            raise InputError("the openai narrator is off until configured: give " + " and ".join(missing) +
                             " (e.g. http://127.0.0.1:11434/v1 and llava for Ollama)")
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(f"narrator base URL {base_url!r} must be http(s)://host[:port][/path], e.g. "
                             "http://127.0.0.1:11434/v1")
        if timeout <= 0:
            raise InputError(f"narrator timeout {timeout} must be a positive number of seconds")
        if max_images < 1:
            raise InputError(f"max_images {max_images} must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(ENV_KEY)
        self.timeout = float(timeout)
        self.max_images = int(max_images)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)

    def _opener(self):
        """Loopback endpoints never go through an HTTP proxy from the environment."""
        host = (urlparse(self.url).hostname or "").lower()
        if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
            return urllib.request.build_opener(urllib.request.ProxyHandler({}))
        return urllib.request.build_opener()

    @property
    def url(self) -> str:
        return self.base_url + "/chat/completions"

    def request_body(self, findings: dict, images: Sequence[ReportImage]) -> dict:
        """The exact JSON sent: system prompt, findings context, images as data URLs."""
        content: List[dict] = [{"type": "text", "text": user_prompt(model_context(findings))}]
        for im in list(images)[: self.max_images]:
            data = base64.b64encode(im.png_bytes()).decode("ascii")
            content.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
        return {"model": self.model, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "stream": False,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]}

    def narrate(self, findings: dict, images: Sequence[ReportImage]) -> Narrative:
        if not images:
            raise NarratorError("the openai narrator needs at least one overlay image; the run has no PNG")
        body = self.request_body(findings, images)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        t0 = time.perf_counter()
        where = f"narrator endpoint {self.url}"
        try:
            with self._opener().open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip().replace("\n", " ") if exc.fp else ""
            raise NarratorError(f"{where} answered HTTP {exc.code} {exc.reason}"
                                f"{': ' + detail if detail else ''}; check the model name {self.model!r}, the key "
                                "and the server's log") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise NarratorError(f"{where} gave no answer within {self.timeout:g} s (timeout); the server may "
                                    "be loading the model - try a longer --openai-timeout") from None
            if isinstance(reason, ConnectionRefusedError):
                raise NarratorError(f"{where} refused the connection; is the server running and listening on "
                                    f"{urlparse(self.url).netloc}?") from None
            raise NarratorError(f"{where} could not be reached ({reason})") from None
        except (socket.timeout, TimeoutError):
            raise NarratorError(f"{where} gave no answer within {self.timeout:g} s (timeout); the server may be "
                                "loading the model - try a longer --openai-timeout") from None
        except (ConnectionError, OSError) as exc:
            raise NarratorError(f"{where} failed ({type(exc).__name__}: {exc})") from None
        try:
            answer = json.loads(raw.decode("utf-8"))
            text = answer["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise NarratorError(f"{where} answered something that is not an OpenAI chat completion "
                                f"(first bytes: {raw[:120]!r}); expected JSON with choices[0].message.content") \
                from None
        if isinstance(text, list):  # some servers return content parts
            text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
        if not isinstance(text, str) or not text.strip():
            raise NarratorError(f"{where} answered with empty text")
        return self.finish(text, findings, prompt=body["messages"][1]["content"][0]["text"],
                           images_sent=[im.path.name for im in list(images)[: self.max_images]],
                           seconds=time.perf_counter() - t0,
                           model={"name": "openai-compatible", "model": self.model, "endpoint": self.base_url,
                                  "served_model": answer.get("model")})

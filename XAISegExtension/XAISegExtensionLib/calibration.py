"""Calibration (a mixin of :class:`XAISegLogic`): time one encoder and one decoder pass of the
chosen segmenter in the worker, without blocking the caller; :meth:`XAISegLogic.poll` finishes it.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from .process import WorkerProcess


def _default_settings():
    from .run_settings import RunSettings

    return RunSettings()


@dataclass
class CalibrationJob:
    """A calibration running in the worker (the panel stays responsive)."""

    key: str
    workdir: Path
    process: WorkerProcess
    result: Optional[Dict[str, float]] = None
    error: str = ""
    timeout_at: float = 0.0


class CalibrationMixin:
    """Needs ``self.python``, ``self.calibration``, ``self.calibrationJob``, ``self.calibrationCallback``,
    ``self.stopGrace``, ``self._stopping``, :meth:`resolveDevice` and :meth:`poll`."""

    def calibrationKey(self, settings: Optional[Any] = None) -> str:
        """The segmenter and the device it really runs on (``auto`` and Force CPU resolved without
        waiting for the device probe): a calibration on the GPU is not used for a CPU run."""
        settings = settings or _default_settings()
        resolved = self.resolveDevice(settings.device, settings.force_cpu, wait=False)
        if resolved:
            settings = replace(settings, device=resolved, force_cpu=False)
        return json.dumps(settings.segmenter_options(), sort_keys=True)

    def startCalibration(self, settings: Optional[Any] = None, timeout: float = 300.0) -> CalibrationJob:
        """Time the chosen segmenter's encoder and decoder passes in the worker (the median of
        :data:`xaiseg.cost.CALIBRATION_PASSES` each) without blocking; :meth:`poll` finishes it
        (``calibrationCallback(job)``; result in :attr:`calibration`)."""
        if self.calibrationJob is not None:
            return self.calibrationJob
        settings = settings or _default_settings()
        settings = replace(settings, device=self.resolveDevice(settings.device, settings.force_cpu), force_cpu=False)
        key = self.calibrationKey(settings)
        workdir = Path(tempfile.mkdtemp(prefix="xaiseg-calibrate-"))
        try:
            req = {"task": "calibrate", "segmenter": settings.segmenter_options(),
                   "threads": settings.threads, "cancel_file": "cancel"}
            (workdir / "request.json").write_text(json.dumps(req), encoding="utf-8")
            proc = WorkerProcess(workdir / "request.json", python=self.python)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self.calibrationJob = CalibrationJob(key, workdir, proc,
                                             timeout_at=time.monotonic() + timeout)
        return self.calibrationJob

    def _advanceCalibration(self) -> None:
        cal = self.calibrationJob
        if cal is None:
            return
        cal.process.poll()
        if not cal.process.finished:
            if time.monotonic() > cal.timeout_at:
                cal.error = "calibration did not finish in time and was stopped"
                self.cancelCalibration()
                self._finishCalibration(cal)
            return
        cal.process.poll()
        final = cal.process.final or {}
        cal.process.close()
        shutil.rmtree(cal.workdir, ignore_errors=True)
        if final.get("event") == "result":
            cal.result = {k: float(final[k]) for k in ("seconds_encoder", "seconds_decoder", "seconds_load")}
            self.calibration[cal.key] = cal.result
        else:
            cal.error = final.get("message") or cal.process.stderr_tail(8) or "the calibration worker failed"
        self._finishCalibration(cal)

    def _finishCalibration(self, cal: CalibrationJob) -> None:
        self.calibrationJob = None
        if self.calibrationCallback is not None:
            self.calibrationCallback(cal)

    def cancelCalibration(self) -> None:
        cal = self.calibrationJob
        if cal is None:
            return
        cal.process.terminate(self.stopGrace)
        self._stopping.append(cal)
        self.calibrationJob = None

    def calibrate(self, settings: Optional[Any] = None, timeout: float = 300.0) -> Dict[str, float]:
        """Calibrate and wait (scripts and tests; the panel uses :meth:`startCalibration`)."""
        key = self.calibrationKey(settings)
        if key in self.calibration:
            return self.calibration[key]
        done: List[CalibrationJob] = []
        previous = self.calibrationCallback
        self.calibrationCallback = done.append
        try:
            self.startCalibration(settings, timeout)
            while not done:
                self.poll()
                time.sleep(0.05)
        finally:
            self.calibrationCallback = previous
        if done[0].result is None:
            raise RuntimeError(done[0].error)
        return done[0].result

"""The model Triton's Python backend runs: a :class:`Detector` inside the backend's stub process.

``engine.serve`` writes a model repository whose ``model.py`` files import :class:`TritonPythonModel`
from here. Triton starts one stub process per model instance:

* a raw-frame model's stub holds its own ``Detector``, so a request goes client → Triton → stub → ONNX
  Runtime (or TensorRT) and back, with no process in between;
* the encoded-image model's stub holds no Detector: it decodes the files and sends each frame to the
  raw-frame model through Triton (business logic scripting), so ``--instances N`` means N Detectors.

The settings come from the model config's ``parameters`` (key :data:`PARAMETERS_KEY`, a
:class:`~engine.serve.settings.StubSettings` as JSON).

Errors: a request whose input the ``Detector`` cannot take gets ``TritonError(INVALID_ARG)`` (HTTP 400 /
gRPC INVALID_ARGUMENT) with the project's one line (reason; fix) and one warning line in Triton's log (at
most :data:`~engine.serve.handler.BAD_REQUEST_LOG_LINES` per window per instance); a failure of ours gets
``INTERNAL`` with one line, its traceback going to the log only. The other requests of a batch are answered
as usual.

Imported only inside the stub (``triton_python_backend_utils`` exists only there).
"""
from __future__ import annotations

import json
import traceback
from typing import Any

import numpy as np

from ..errors import DeployError
from .handler import DetectorModel, LogLimit, refusal
from .protocol import (CLIENT_ERROR, EMPTY_INPUT, IMAGE_INPUT, OUTPUTS, SERVER_ERROR, detections_from_outputs,
                       error_outputs, frames_from_encoded_input, one_line, pack_outputs)
from .settings import PARAMETERS_KEY, StubSettings


def settings(model_config: dict) -> StubSettings:
    """The :class:`~engine.serve.settings.StubSettings` stored in a Triton model config (parsed JSON)."""
    return StubSettings.from_json(model_config["parameters"][PARAMETERS_KEY]["string_value"])


def empty_input(shape: tuple[int, ...], name: str, request: int) -> str | None:
    """The project's message for an input with nothing in it (a ``[1, 0, 64, 3]`` frame), else ``None``."""
    return EMPTY_INPUT.format(where=f"request {request}: input '{name}'", shape=list(shape)) if 0 in shape else None


class TritonPythonModel:
    """Triton's Python-backend model interface (``initialize``, ``execute``, ``finalize``) over a Detector."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        self.settings = s = settings(json.loads(args["model_config"]))
        self.name = args["model_name"]
        self.bad_requests = LogLimit(s.log_lines, s.log_window_s,
                                     emit=lambda m: pb_utils.Logger.log_warn(f"engine.serve: {m}"))
        self.detector = self.model = None
        if s.target:  # the encoded-image model: decode here, detect in the raw-frame model
            return
        from ..detector import Detector

        opts = {"intra_op_threads": s.threads, "spin_wait": False} if s.onnx else {}
        self.detector = Detector(s.model, conf=s.conf, iou=s.iou, max_det=s.max_det, **opts)
        # warm up every batch size the batcher may form: a backend's first run at a new shape is several
        # times slower (ONNX Runtime plans memory per shape), which would land on some client's request
        blank = np.full((*self.detector.imgsz, 3), 114, np.uint8)
        for b in range(1, s.warmup_batch + 1):
            self.detector.predict([blank] * b)
        self.model = DetectorModel(self.detector, s.input, model=self.name, bad_requests=self.bad_requests,
                                   on_internal=lambda m: pb_utils.Logger.log_error(f"engine.serve: {m}"))

    def execute(self, requests: list) -> list:
        pb = self.pb
        try:
            inputs, answers = [], [None] * len(requests)
            for i, r in enumerate(requests):
                array = pb.get_input_tensor_by_name(r, self.settings.input).as_numpy()
                refused = empty_input(array.shape, self.settings.input, i)
                if refused:
                    answers[i] = self._response(refusal(refused, self.name, self.bad_requests))
                else:
                    inputs.append((i, array))
            arrays, numbers = [a for _, a in inputs], [i for i, _ in inputs]
            outputs = self._decoded(arrays, numbers) if self.settings.target else self.model.outputs(arrays, numbers)
            for (i, _), out in zip(inputs, outputs):
                answers[i] = self._response(out)
            return answers
        except Exception:  # noqa: BLE001 - a bug of ours: the traceback to Triton's log, one line to clients
            pb.Logger.log_error("engine.serve: " + traceback.format_exc())
            return [self._error("engine.serve: internal error (see the server log)", pb.TritonError.INTERNAL)
                    for _ in requests]

    def _decoded(self, inputs: list[np.ndarray], numbers: list[int]) -> list[dict[str, np.ndarray]]:
        """Encoded images: decode each request's files, detect each frame in the raw-frame model."""
        out = []
        for i, array in zip(numbers, inputs):
            try:
                frames = frames_from_encoded_input(array, i)
            except DeployError as e:
                out.append(refusal(one_line(e), self.name, self.bad_requests))
                continue
            dets, failed = [], None
            for frame in frames:
                reply = self.pb.InferenceRequest(model_name=self.settings.target, requested_output_names=list(OUTPUTS),
                                                 inputs=[self.pb.Tensor(IMAGE_INPUT, frame[None])]).exec()
                if reply.has_error():  # the raw model's own refusal stays a client error
                    code = getattr(reply.error(), "code", lambda: None)()
                    failed = error_outputs(f"request {i}: {reply.error().message()}",
                                           server=code != self.pb.TritonError.INVALID_ARG)
                    break
                dets += detections_from_outputs({n: self.pb.get_output_tensor_by_name(reply, n).as_numpy()
                                                 for n in OUTPUTS})
            out.append(failed or pack_outputs(dets))
        return out

    def _response(self, out: dict[str, np.ndarray]):
        pb = self.pb
        for key, code in ((CLIENT_ERROR, pb.TritonError.INVALID_ARG), (SERVER_ERROR, pb.TritonError.INTERNAL)):
            if key in out:
                return self._error(bytes(out[key].reshape(-1)[0]).decode("utf-8", "replace"), code)
        return pb.InferenceResponse([pb.Tensor(name, value) for name, value in out.items()])

    def _error(self, message: str, code: int):
        return self.pb.InferenceResponse(error=self.pb.TritonError(message, code))

    def finalize(self) -> None:
        if self.detector is not None:
            self.detector.close()

"""Error replies inside Triton: a bad request gets INVALID_ARG (HTTP 400 / gRPC INVALID_ARGUMENT) and
one line, never a traceback.

pytriton runs our inference callable in this process and a generic model (its ``model.py``) inside
Triton's Python-backend stub. That model turns any exception of the callable into
``TritonModelException(traceback)``: HTTP 500 / gRPC INTERNAL with server paths in it, for every
request of the batch. And a zero-size input (a ``[1, 0, 64, 3]`` frame) fails inside it, in pytriton's
shared-memory copy, before our callable sees the request.

So the callable answers a bad request with the outputs of :func:`~engine.serve.protocol.error_outputs`
(the other requests of the batch are answered as usual), and :func:`install` appends :data:`SHIM` to the
``model.py`` that pytriton sends to Triton. The shim, using only the Python backend's public API:

* turns such a response into ``InferenceResponse(error=TritonError(message, INVALID_ARG))`` (or
  ``INTERNAL`` for our own failures, still one line);
* answers a request with a zero-size input itself, with the project's message, and passes the others on;
* turns any other failure of pytriton's model into one line per request (the traceback goes to Triton's
  log, not to the client).

If a future pytriton renames what the shim wraps, :func:`install` says so and errors come back as
pytriton sends them (500 with a traceback): never a crash.
"""
from __future__ import annotations

import logging

from .protocol import CLIENT_ERROR, EMPTY_INPUT, SERVER_ERROR

log = logging.getLogger("engine.serve")

SHIM = '''

# ---- appended by engine.serve (engine/serve/stub.py): bad requests get INVALID_ARG and one line ----
def _engine_serve_shim(client_key, server_key, empty_message, log_lines, log_window_s):
    global _wrap_response
    import time
    wrap, execute = _wrap_response, TritonPythonModel.execute
    logged = [0.0, 0]  # window start, lines in it: one line per refused request, rate-limited

    def warn(message):
        now = time.monotonic()
        if now - logged[0] >= log_window_s:
            logged[:] = [now, 0]
        if logged[1] < log_lines:
            logged[1] += 1
            pb_utils.Logger.log_warn("engine.serve: bad request: " + message)

    def error(message, code):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))

    def wrapped(response, requested_output_names, model_outputs_dict):
        data = response.data
        if data is not None:
            for key, code in ((client_key, pb_utils.TritonError.INVALID_ARG),
                              (server_key, pb_utils.TritonError.INTERNAL)):
                if key in data:
                    return error(bytes(data[key].reshape(-1)[0]).decode("utf-8", "replace"), code)
        return wrap(response, requested_output_names, model_outputs_dict)

    def empty(request, index, names):
        for name in names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            shape = tensor.as_numpy().shape if tensor is not None else ()
            if 0 in shape:  # pytriton cannot pass it on: answered here
                message = empty_message.format(request=index, name=name, shape=list(shape))
                warn(message)
                return error(message, pb_utils.TritonError.INVALID_ARG)
        return None

    def guarded(self, requests):
        try:
            refused = [empty(r, i, list(self._model_inputs)) for i, r in enumerate(requests)]
            passed = [r for r, e in zip(requests, refused) if e is None]
            answers = iter(execute(self, passed) if passed else [])
            return [e if e is not None else next(answers) for e in refused]
        except pb_utils.TritonModelException as e:  # pytriton's own failure: its traceback to the log only
            pb_utils.Logger.log_error("engine.serve: " + str(e))
            return [error("engine.serve: internal error (see the server log)", pb_utils.TritonError.INTERNAL)
                    for _ in requests]

    _wrap_response = wrapped
    TritonPythonModel.execute = guarded


_engine_serve_shim(%r, %r, %r, %d, %r)
'''


def shim_source(log_lines: int, log_window_s: float) -> str:
    """:data:`SHIM` with the project's keys, message and log rate filled in."""
    return SHIM % (CLIENT_ERROR, SERVER_ERROR, EMPTY_INPUT, log_lines, float(log_window_s))


def install(model_cls: type, log_lines: int = 10, log_window_s: float = 10.0) -> bool:
    """Append the shim to the ``model.py`` that pytriton's ``model_cls`` sends to Triton (once); ``False``
    (and a warning) when pytriton's layout is not the one the shim knows."""
    original = getattr(model_cls, "get_proxy_model_files", None)
    if original is None:
        log.warning("pytriton has no Model.get_proxy_model_files: bad requests will get HTTP 500 with a traceback")
        return False
    if getattr(original, "engine_serve_shim", False):
        return True

    def get_proxy_model_files(self) -> dict[str, bytes]:
        files = original(self)
        key = next((k for k in files if k.endswith("/model.py")), None)
        text = files[key].decode() if key else ""
        if "_wrap_response" not in text or "class TritonPythonModel" not in text:
            log.warning("pytriton's model.py is not the one engine.serve knows: bad requests will get HTTP 500")
            return files
        files[key] = (text + shim_source(log_lines, log_window_s)).encode()
        return files

    get_proxy_model_files.engine_serve_shim = True
    model_cls.get_proxy_model_files = get_proxy_model_files
    return True

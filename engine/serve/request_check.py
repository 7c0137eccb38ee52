"""The checks ``engine.serve``'s front makes on an inference request before Triton sees it.

Triton validates every request against the model config before any backend code runs and answers a bad one
in its own words, some misleading (a frame sent without its batch axis, ``[480, 640, 3]``, reads "batch-size
must be <= 8": Triton takes the 480 rows for frames). :func:`check` makes the same checks in the same order and
says what is wrong and how to fix it, in the project's one line. It sees only what a request declares (model,
input names, datatypes, shapes, byte counts), never the pixels: the front parses a request's header, not its
data, and anything it cannot read is left to Triton, which answers with its own one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from .protocol import EMPTY_INPUT, ENCODED_INPUT, IMAGE_INPUT
from .triton_process import ServedModel

# how each input is described in a fix, and its datatype as the KServe v2 protocol names it
WHAT = {IMAGE_INPUT: ("UINT8", "uint8 BGR frames of shape [batch, height, width, 3] (cv2.imread's array with a "
                               "batch axis: frame[None])"),
        ENCODED_INPUT: ("BYTES", "image files (the bytes of a JPEG/PNG/BMP/WebP file) of shape [batch, 1]")}


@dataclass(frozen=True)
class Tensor:
    """What a request declares of one input."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    nbytes: int | None = None  # the bytes it carries (None: sent as JSON numbers, or in shared memory)


@dataclass(frozen=True)
class Refusal:
    """A bad request's answer: ``found`` is ``False`` for an unknown model (HTTP 404 / gRPC NOT_FOUND),
    else the request is a client error (HTTP 400 / gRPC INVALID_ARGUMENT)."""

    message: str
    found: bool = True


Check = Callable[[str, list[Tensor], str], "Refusal | None"]  # model, inputs, request id: what a front calls


def shown(name: str, limit: int = 80) -> str:
    """A client's name (of a model, an input) as it may appear in a message and a log line: control
    characters escaped (a newline would forge a log line and break the one-line answer), at most ``limit``."""
    text = name if name.isprintable() else name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"


def _served(models: Sequence[ServedModel]) -> str:
    return " and ".join(f"'{m.name}' ({'image files' if m.input_name == ENCODED_INPUT else 'raw frames'})"
                        for m in models)


def check(model: str, inputs: Sequence[Tensor], models: Sequence[ServedModel], request_id: str = "") -> Refusal | None:
    """The project's one line (reason; fix) for a request to ``model`` with ``inputs`` that Triton would refuse,
    or that no frame could come from (a zero-size frame); ``None`` for a request to pass on. A request that
    carries an id gets it in front, as Triton writes it (``[request id: 7] ...``): a stream's answers can
    come in another order than its requests."""
    refusal = _check(model, inputs, models)
    if refusal is None or not request_id:
        return refusal
    return Refusal(f"[request id: {shown(request_id)}] {refusal.message}", refusal.found)


def _check(model: str, inputs: Sequence[Tensor], models: Sequence[ServedModel]) -> Refusal | None:
    served = {m.name: m for m in models}
    m = served.get(model)
    if m is None:
        return Refusal(f"unknown model '{shown(model)}': this server serves {_served(models)}; fix: send frames to "
                       "one of them", found=False)
    datatype, what = WHAT[m.input_name]
    send = f"send {what} as input '{m.input_name}'"
    others = [t for t in inputs if t.name != m.input_name]
    if others or not inputs:
        if not inputs:
            return Refusal(f"a request to '{model}' without inputs; fix: {send}")
        elsewhere = [o.name for o in served.values() if o.input_name == others[0].name]
        where = f" (that is the input of '{elsewhere[0]}')" if elsewhere else ""
        return Refusal(f"'{model}' has no input '{shown(others[0].name)}'{where}; fix: {send}")
    if len(inputs) > 1:
        return None  # the same input twice: Triton's own message says it
    t = inputs[0]
    head = f"input '{t.name}' of '{model}'"
    shape = list(t.shape)
    if t.datatype != datatype:
        return Refusal(f"{head} has datatype {shown(t.datatype)}; fix: send datatype {datatype}: {what}")
    rank = len(m.input_dims) + 1
    if len(shape) != rank:
        if m.input_name == IMAGE_INPUT and len(shape) == 3 and shape[-1] == 3:
            return Refusal(f"{head} has shape {shape}: one frame without the batch axis; fix: send shape "
                           f"{[1, *shape]} (frame[None], or np.stack(frames) for several)")
        if m.input_name == ENCODED_INPUT and len(shape) == 1:
            return Refusal(f"{head} has shape {shape}; fix: send shape {[*shape, 1]}, one file per row "
                           "(np.array(files, dtype=object).reshape(-1, 1))")
        return Refusal(f"{head} has shape {shape}; fix: {send}")
    if any(d < 0 for d in shape):
        return Refusal(f"{head} has shape {shape}; fix: {send}")
    fixed = [(i, d) for i, d in enumerate(m.input_dims, 1) if d != -1 and shape[i] != d]
    if fixed:
        i, d = fixed[0]
        if m.input_name == IMAGE_INPUT:
            return Refusal(f"{head} has shape {shape}: {shape[i]} channels, not 3; fix: send BGR frames "
                           "(cv2.cvtColor with COLOR_BGRA2BGR for 4 channels, COLOR_GRAY2BGR for 1)")
        return Refusal(f"{head} has shape {shape}; fix: {send}")
    if shape[0] < 1:
        return Refusal(f"{head} has shape {shape}, an empty batch; fix: send at least one "
                       f"{'frame' if m.input_name == IMAGE_INPUT else 'file'}")
    if shape[0] > m.max_batch:
        return Refusal(f"{head} has shape {shape}, a batch of {shape[0]} over this server's maximum of "
                       f"{m.max_batch}; fix: send at most {m.max_batch} per request, or start engine.serve with "
                       f"--max-batch {shape[0]}")
    if 0 in shape:
        return Refusal(EMPTY_INPUT.format(where=head, shape=shape))
    if datatype == "UINT8" and t.nbytes is not None and t.nbytes != math.prod(shape):
        return Refusal(f"{head} has shape {shape} ({math.prod(shape)} bytes) but its data is {t.nbytes} bytes; "
                       "fix: send the whole array (np.ascontiguousarray(frames).tobytes())")
    return None

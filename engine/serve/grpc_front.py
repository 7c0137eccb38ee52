"""``engine.serve``'s gRPC endpoint: checks each inference request, passes every call on to Triton.

Triton's own gRPC endpoint listens on a loopback port only this process uses. Every method of Triton's
``inference.GRPCInferenceService`` (and any other, as a unary call) is passed on as bytes, not re-encoded;
``ModelInfer`` requests, and each request of a ``ModelStreamInfer`` stream, are parsed first and checked
(:func:`~engine.serve.request_check.check`): a bad one gets ``INVALID_ARGUMENT`` (``NOT_FOUND`` for an unknown
model) with the project's one line, or in a stream an error response carrying it, and one rate-limited log
line. Triton's status codes and messages come back as it sent them; while it does not answer (starting,
stopping) the status is ``UNAVAILABLE``.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

from .request_check import Check, Tensor

SERVICE = "/inference.GRPCInferenceService/"
INFER, STREAM = SERVICE + "ModelInfer", SERVICE + "ModelStreamInfer"
# no message size limit, as Triton's own endpoint (gRPC's default of 4 MB refuses one 1080p frame)
OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
# calls served at once: each unary call waits on Triton in a thread of its own, and each open stream holds one for
# its whole life (64 held streams stalled every other call); the threads start only as calls need them
WORKERS = 1024
RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
             ("grpc.max_reconnect_backoff_ms", 500)]
NOT_ANSWERING = "engine.serve: Triton is not answering (starting or stopping); fix: retry in a few seconds"
TRANSPORT = ("failed to connect", "Socket closed", "Connection reset", "GOAWAY")  # gRPC's words for a lost peer
_END = object()


def declared_inputs(request) -> list[Tensor]:
    """The inputs a parsed ``ModelInferRequest`` declares, with the bytes each carries in
    ``raw_input_contents`` (``None`` where its data is typed contents or in shared memory)."""
    raw = list(request.raw_input_contents)
    out = []
    for i, item in enumerate(request.inputs):
        shared = "shared_memory_region" in item.parameters
        nbytes = len(raw[i]) if raw and i < len(raw) and not shared else None
        out.append(Tensor(item.name, item.datatype, tuple(item.shape), nbytes))
    return out


class GrpcFront:
    """The public gRPC endpoint (a context manager): bound at construction, served from :meth:`start`."""

    def __init__(self, host: str, port: int, upstream_port: int, check: Check,
                 on_refusal: Callable[[str, str], None]) -> None:
        import grpc
        from tritonclient.grpc import service_pb2

        self.grpc, self.pb = grpc, service_pb2
        self.check, self.on_refusal = check, on_refusal
        self.upstream = f"127.0.0.1:{upstream_port}"
        # calls made while Triton starts put the channel in reconnect backoff, which grows to 2 minutes by default:
        # a client would get UNAVAILABLE long after Triton answers
        self.channel = grpc.insecure_channel(self.upstream, options=OPTIONS + RECONNECT)
        self._calls: dict[str, Callable] = {}
        # grpc's default SO_REUSEPORT would let a second server share the port: off, so a held port is an error
        self.server = grpc.server(ThreadPoolExecutor(WORKERS, thread_name_prefix="engine-serve-grpc"),
                                  handlers=[_Handler(self)], options=OPTIONS + [("grpc.so_reuseport", 0)])
        try:
            self.port = self.server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except RuntimeError as e:
            self.channel.close()
            raise OSError(f"cannot bind {host}:{port} ({e})") from None
        if not self.port:
            self.channel.close()
            raise OSError(f"cannot bind {host}:{port}")

    def start(self) -> "GrpcFront":
        self.server.start()
        return self

    def close(self) -> None:
        """Stop listening and end every call (a call in flight gets CANCELLED)."""
        self.server.stop(grace=None).wait(5)
        self.channel.close()

    def __enter__(self) -> "GrpcFront":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the calls ---------------------------------------------------------------------------------

    def _upstream(self, method: str, streaming: bool = False) -> Callable:
        call = self._calls.get(method)
        if call is None:
            make = self.channel.stream_stream if streaming else self.channel.unary_unary
            call = self._calls[method] = make(method)  # no (de)serializers: bytes in, bytes out
        return call

    def _refusal(self, data: bytes):
        """The parsed request and the :class:`~engine.serve.request_check.Refusal` of a bad ``ModelInferRequest``
        (``None``: pass it on)."""
        try:
            request = self.pb.ModelInferRequest.FromString(data)
        except Exception:  # noqa: BLE001 - not a request we can read: Triton says what is wrong
            return None, None
        refusal = self.check(request.model_name, declared_inputs(request), request.id)
        if refusal is not None:
            self.on_refusal(request.model_name, refusal.message)
        return request, refusal

    def unary(self, method: str, data: bytes, context) -> bytes:
        grpc = self.grpc
        if method == INFER:
            _, refusal = self._refusal(data)
            if refusal is not None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT if refusal.found else grpc.StatusCode.NOT_FOUND,
                              refusal.message)
        call = self._upstream(method).future(data, metadata=_metadata(context), timeout=_timeout(context))
        context.add_callback(call.cancel)  # a client that cancels or goes away cancels the call to Triton
        try:
            return call.result()
        except grpc.FutureCancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "cancelled by the client")
        except grpc.RpcError as e:
            context.abort(e.code(), NOT_ANSWERING if self._unreachable(e) else e.details())

    def _unreachable(self, error) -> bool:
        """Whether the call failed for want of Triton (not a status Triton sent: it answers a restricted API
        with UNAVAILABLE too); gRPC's own text would name Triton's private port."""
        details = error.details() or ""
        return error.code() == self.grpc.StatusCode.UNAVAILABLE and (
            self.upstream in details or any(s in details for s in TRANSPORT))

    def stream(self, method: str, requests: Iterator[bytes], context) -> Iterator[bytes]:
        """Good requests go on to Triton's stream; a bad one is answered in the stream with its error."""
        out: queue.Queue = queue.Queue()
        onward: queue.Queue = queue.Queue()

        def read() -> None:  # the client's requests: on to Triton, or an error response to the client
            try:
                for data in requests:
                    request, refusal = self._refusal(data)
                    if refusal is None:
                        onward.put(data)
                    else:
                        reply = self.pb.ModelInferResponse(model_name=request.model_name, id=request.id)
                        out.put(self.pb.ModelStreamInferResponse(error_message=refusal.message,
                                                                 infer_response=reply).SerializeToString())
            except Exception:  # noqa: BLE001 - the client cancelled or went away
                pass
            finally:
                onward.put(_END)

        def onward_requests() -> Iterator[bytes]:
            while (item := onward.get()) is not _END:
                yield item

        call = self._upstream(method, streaming=True)(onward_requests(), metadata=_metadata(context),
                                                      timeout=_timeout(context))
        context.add_callback(call.cancel)

        def relay() -> None:  # Triton's responses, then the end (or its error)
            try:
                for reply in call:
                    out.put(reply)
                out.put(_END)
            except self.grpc.RpcError as e:
                out.put(e)

        threading.Thread(target=read, daemon=True, name="engine-serve-grpc-read").start()
        threading.Thread(target=relay, daemon=True, name="engine-serve-grpc-relay").start()
        while (item := out.get()) is not _END:
            if isinstance(item, self.grpc.RpcError):
                if item.code() != self.grpc.StatusCode.CANCELLED:
                    context.abort(item.code(), NOT_ANSWERING if self._unreachable(item) else item.details())
                return
            yield item


def _timeout(context) -> float | None:
    """The client's deadline as a timeout for the call to Triton (gRPC reports no deadline as ~2^63 s)."""
    remaining = context.time_remaining()
    return remaining if remaining < 1e9 else None


def _metadata(context) -> list[tuple[str, str]]:
    """The client's metadata to pass on (not gRPC's own keys)."""
    return [(m.key, m.value) for m in context.invocation_metadata()
            if not m.key.startswith((":", "grpc-")) and m.key != "user-agent"]


class _Handler:
    """A gRPC generic handler (grpc takes any object with ``service``): every method to the front."""

    def __init__(self, front: GrpcFront) -> None:
        self.front = front

    def service(self, details):
        grpc, method = self.front.grpc, details.method
        if method == STREAM:
            return grpc.stream_stream_rpc_method_handler(lambda it, ctx: self.front.stream(method, it, ctx))
        return grpc.unary_unary_rpc_method_handler(lambda data, ctx: self.front.unary(method, data, ctx))

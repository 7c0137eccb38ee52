"""``engine.serve``'s front without Triton: its checks, and its HTTP and gRPC endpoints in front of stand-ins.

The stand-ins are real HTTP and gRPC servers on 127.0.0.1 that record what reaches them, so each test shows
what the front passed on (byte for byte), what it answered itself, and what it did when nothing answered
behind it. The same front in front of the real Triton: ``tests/test_triton_serve.py``.
"""
from __future__ import annotations

import gzip
import http.client
import json
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.errors import ConfigError
from engine.serve import ServeConfig
from engine.serve.front import Front, loopback_ports
from engine.serve.grpc_front import OPTIONS
from engine.serve.request_check import Tensor, check
from engine.serve.server import ModelInfo, served_models

pytest.importorskip("grpc")
pytest.importorskip("tritonclient.grpc")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    model = tmp_path_factory.mktemp("front") / "m.onnx"
    model.write_bytes(b"not read here")
    return served_models(ServeConfig(model=model, max_batch=4, instances=1, threads=1, dynamic_batching=False),
                         ModelInfo(3, (320, 320), dynamic=True, onnx=True))


# ---- the checks ---------------------------------------------------------------------------------

def _image(shape, datatype="UINT8", name="image", nbytes=None) -> list[Tensor]:
    return [Tensor(name, datatype, tuple(shape), nbytes)]


@pytest.mark.parametrize("model,inputs,expected", [
    ("yolo", _image((1, 480, 640, 3), nbytes=480 * 640 * 3), None),
    ("yolo", _image((4, 8, 8, 3)), None),  # bytes not known (JSON data, shared memory): Triton counts them
    ("yolo_encoded", _image((2, 1), "BYTES", "encoded", nbytes=123), None),
    ("nope", _image((1, 8, 8, 3)), "unknown model 'nope': this server serves 'yolo' (raw frames) and 'yolo_encoded' "
                                   "(image files); fix: "),
    ("yolo", [], "a request to 'yolo' without inputs; fix: send uint8 BGR frames"),
    ("yolo", _image((1, 8, 8, 3), name="pixels"), "'yolo' has no input 'pixels'; fix: send uint8 BGR frames"),
    ("yolo_encoded", _image((1, 8, 8, 3)), "'yolo_encoded' has no input 'image' (that is the input of 'yolo'); fix: "
                                          "send image files"),
    ("yolo", _image((1, 8, 8, 3), "FP32"), "input 'image' of 'yolo' has datatype FP32; fix: send datatype UINT8"),
    ("yolo", _image((480, 640, 3)), "has shape [480, 640, 3]: one frame without the batch axis; fix: send shape "
                                    "[1, 480, 640, 3] (frame[None]"),
    ("yolo", _image((480, 640)), "input 'image' of 'yolo' has shape [480, 640]; fix: send uint8 BGR frames of shape "
                                 "[batch, height, width, 3]"),
    ("yolo", _image((1, 1, 8, 8, 3)), "has shape [1, 1, 8, 8, 3]; fix: send uint8 BGR frames"),
    ("yolo", _image((1, 8, 8, 4)), "has shape [1, 8, 8, 4]: 4 channels, not 3; fix: send BGR frames"),
    ("yolo", _image((1, -1, 8, 3)), "has shape [1, -1, 8, 3]; fix: send uint8 BGR frames"),
    ("yolo", _image((0, 8, 8, 3)), "has shape [0, 8, 8, 3], an empty batch; fix: send at least one frame"),
    ("yolo", _image((5, 8, 8, 3)), "a batch of 5 over this server's maximum of 4; fix: send at most 4 per request, "
                                   "or start engine.serve with --max-batch 5"),
    ("yolo", _image((1, 0, 64, 3)), "input 'image' of 'yolo' has shape [1, 0, 64, 3], with nothing in it; fix: "),
    ("yolo", _image((1, 8, 8, 3), nbytes=100), "has shape [1, 8, 8, 3] (192 bytes) but its data is 100 bytes; "
                                              "fix: "),
    ("yolo_encoded", _image((2,), "BYTES", "encoded"), "has shape [2]; fix: send shape [2, 1], one file per row"),
    ("yolo_encoded", _image((1, 2), "BYTES", "encoded"), "input 'encoded' of 'yolo_encoded' has shape [1, 2]; fix: "
                                                         "send image files"),
    ("yolo_encoded", _image((1, 1), "UINT8", "encoded"), "has datatype UINT8; fix: send datatype BYTES"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None)
def test_each_refusal_names_the_input_and_the_fix(models, model, inputs, expected):
    refusal = check(model, inputs, models)
    if expected is None:
        assert refusal is None
        return
    assert refusal is not None and expected in refusal.message, (refusal, expected)
    assert len(refusal.message.splitlines()) == 1 and "; fix: " in refusal.message
    assert refusal.found == (model != "nope")


def test_the_same_input_twice_is_left_to_triton(models):
    assert check("yolo", _image((1, 8, 8, 3)) * 2, models) is None


# ---- HTTP ----------------------------------------------------------------------------------------

class _Upstream(ThreadingHTTPServer):
    """Stands in for Triton's HTTP endpoint: records each request, answers 200 with a JSON body."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict, bytes]] = []
        super().__init__(("127.0.0.1", 0), _UpstreamHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        data = json.dumps({"path": self.path, "bytes": len(body), "method": self.command}).encode()
        self.send_response(200 if b"triton-refuses" not in body else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Upstream", "triton")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_POST = do_HEAD = do_OPTIONS = do_PATCH = do_GET


def _infer_body(shape, datatype="UINT8", name="image", nbytes=None) -> tuple[bytes, int]:
    """A KServe v2 binary inference request: JSON header, then the data; and the header's length."""
    nbytes = nbytes if nbytes is not None else (math.prod(shape) if datatype == "UINT8" else 4)
    head = json.dumps({"inputs": [{"name": name, "shape": list(shape), "datatype": datatype,
                                   "parameters": {"binary_data_size": nbytes}}]}).encode()
    return head + b"\x07" * nbytes, len(head)


@pytest.fixture
def http_front(models):
    upstream = _Upstream()
    (port,) = loopback_ports(1)
    front = Front("127.0.0.1", port, 0, upstream.server_address[1], 0, models)
    front.start()
    try:
        yield front, port, upstream
    finally:
        front.close()
        upstream.shutdown()
        upstream.server_close()


def _post(port: int, path: str, body: bytes, headers: dict) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=headers)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def test_http_a_good_request_reaches_triton_byte_for_byte_and_its_answer_comes_back(http_front):
    front, port, upstream = http_front
    body, head = _infer_body((2, 8, 8, 3))
    status, headers, data = _post(port, "/v2/models/yolo/infer", body,
                                  {"Inference-Header-Content-Length": str(head), "X-Client": "c1"})
    assert status == 200 and headers["X-Upstream"] == "triton"
    assert json.loads(data) == {"path": "/v2/models/yolo/infer", "bytes": len(body), "method": "POST"}
    method, path, sent, got = upstream.seen[-1]
    assert (method, path, got) == ("POST", "/v2/models/yolo/infer", body)
    assert sent["Inference-Header-Content-Length"] == str(head) and sent["X-Client"] == "c1"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # reads pass on too, on one connection
    for _ in range(2):
        conn.request("GET", "/v2/health/ready")
        reply = conn.getresponse()
        assert reply.status == 200 and json.loads(reply.read())["path"] == "/v2/health/ready"
    conn.close()


def test_http_a_bad_request_is_answered_by_the_front_and_never_reaches_triton(http_front, caplog):
    front, port, upstream = http_front
    cases = [((480, 640, 3), {}, "one frame without the batch axis", 400),
             ((1, 8, 8, 3), {"nbytes": 100}, "but its data is 100 bytes", 400)]
    for shape, extra, message, code in cases:
        body, head = _infer_body(shape, **extra)
        status, _, data = _post(port, "/v2/models/yolo/versions/1/infer", body,
                                {"Inference-Header-Content-Length": str(head)})
        assert status == code and message in json.loads(data)["error"]
    body, head = _infer_body((1, 8, 8, 3))
    status, _, data = _post(port, "/v2/models/nope/infer", body, {"Inference-Header-Content-Length": str(head)})
    assert status == 404 and json.loads(data)["error"].startswith("unknown model 'nope'")
    # a gzip-compressed request is checked on its decompressed header
    body, head = _infer_body((1, 8, 8, 4))
    status, _, data = _post(port, "/v2/models/yolo/infer", gzip.compress(body),
                            {"Inference-Header-Content-Length": str(head), "Content-Encoding": "gzip"})
    assert status == 400 and "4 channels" in json.loads(data)["error"]
    # JSON data without binary: the whole body is the header
    plain = json.dumps({"inputs": [{"name": "image", "shape": [8, 8, 3], "datatype": "UINT8", "data": [0] * 192}]})
    status, _, data = _post(port, "/v2/models/yolo/infer", plain.encode(), {"Content-Type": "application/json"})
    assert status == 400 and "without the batch axis" in json.loads(data)["error"]
    assert upstream.seen == []
    assert "bad request to 'yolo': input 'image' of 'yolo' has shape [480, 640, 3]" in caplog.text


def test_http_what_the_front_cannot_read_is_left_to_triton(http_front):
    front, port, upstream = http_front
    status, _, data = _post(port, "/v2/models/yolo/infer", b"{not json triton-refuses", {})
    assert status == 400 and upstream.seen[-1][3] == b"{not json triton-refuses"  # Triton's own answer


def test_http_a_chunked_request_is_read_whole(http_front):
    front, port, upstream = http_front
    body, head = _infer_body((1, 4, 4, 3))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
        s.sendall(b"POST /v2/models/yolo/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Inference-Header-Content-Length: %d\r\nConnection: close\r\n\r\n%s0\r\n\r\n" % (head, chunks))
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200") and upstream.seen[-1][3] == body


def test_http_a_body_too_large_is_refused_before_it_is_read(http_front, monkeypatch):
    import engine.serve.http_front as hf

    front, port, upstream = http_front
    monkeypatch.setattr(hf, "MAX_BODY", 1000)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # the body is never sent
        s.sendall(b"POST /v2/models/yolo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 413")
    status, _, data = _post(port, "/v2/models/yolo/infer", b"x" * 1001, {})
    assert status == 413 and "over" in json.loads(data)["error"] and upstream.seen == []


def test_http_nothing_behind_the_front_is_503_and_close_ends_kept_alive_connections(models):
    (port, dead) = loopback_ports(2)
    front = Front("127.0.0.1", port, 0, dead, 0, models).start()
    try:
        status, _, data = _post(port, "/v2/health/ready", b"", {})
        assert status == 503 and "Triton is not answering" in json.loads(data)["error"]
        keep = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        keep.request("GET", "/v2/health/live")
        reply = keep.getresponse()
        assert reply.status == 503 and reply.read() and not reply.will_close  # a kept-alive connection
        t0 = time.monotonic()
        front.close()
        assert keep.sock.recv(1) == b"" and time.monotonic() - t0 < 3  # closed by the front, not left open
        keep.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        front.close()


@pytest.mark.parametrize("flag", ["--http-port", "--grpc-port"])
def test_a_held_port_is_a_config_error_naming_the_flag(models, flag):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        ports = (port, 0) if flag == "--http-port" else (0, port)
        with pytest.raises(ConfigError, match=f"{flag} {port}: 127.0.0.1:{port} is not available"):
            Front("127.0.0.1", *ports, 1, 1, models)


# ---- gRPC ----------------------------------------------------------------------------------------

class _GrpcUpstream:
    """Stands in for Triton's gRPC endpoint: unary calls answer ``b"reply:" + request``; ``ModelConfig``
    fails with Triton's own status; a stream answers each request with a response of the same id."""

    def __init__(self) -> None:
        import grpc
        from tritonclient.grpc import service_pb2 as pb

        self.seen: list[tuple[str, bytes, dict]] = []
        upstream = self

        class Handler:
            def service(self, details):
                method = details.method

                def unary(data, ctx):
                    upstream.seen.append((method, data, dict(ctx.invocation_metadata())))
                    if method.endswith("/ModelConfig"):
                        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "Triton's own words")
                    return b"reply:" + data

                def stream(it, ctx):
                    for data in it:
                        upstream.seen.append((method, data, {}))
                        request = pb.ModelInferRequest.FromString(data)
                        yield pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(
                            model_name=request.model_name, id=request.id)).SerializeToString()

                if method.endswith("/ModelStreamInfer"):
                    return grpc.stream_stream_rpc_method_handler(stream)
                return grpc.unary_unary_rpc_method_handler(unary)

        self.server = grpc.server(ThreadPoolExecutor(256), handlers=[Handler()], options=OPTIONS)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


def _request(shape, model="yolo", datatype="UINT8", nbytes=None, id_=""):
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, id=id_)
    item = request.inputs.add()
    item.name, item.datatype = "image", datatype
    item.shape.extend(shape)
    request.raw_input_contents.append(b"\x01" * (nbytes if nbytes is not None else math.prod(shape)))
    return request


@pytest.fixture
def grpc_front(models):
    import grpc

    upstream = _GrpcUpstream()
    (port,) = loopback_ports(1)
    front = Front("127.0.0.1", 0, port, 0, upstream.port, models).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)  # as tritonclient's: no size limit
    try:
        yield channel, upstream
    finally:
        channel.close()
        front.close()
        upstream.server.stop(None)


INFER = "/inference.GRPCInferenceService/ModelInfer"


def test_grpc_good_calls_pass_on_as_bytes_and_triton_errors_come_back_as_sent(grpc_front):
    import grpc

    channel, upstream = grpc_front
    data = _request((2, 8, 8, 3)).SerializeToString()
    assert channel.unary_unary(INFER)(data, metadata=[("x-client", "c1")], timeout=10) == b"reply:" + data
    method, got, metadata = upstream.seen[-1]
    assert (method, got, metadata["x-client"]) == (INFER, data, "c1")
    live = "/inference.GRPCInferenceService/ServerLive"
    assert channel.unary_unary(live)(b"", timeout=10) == b"reply:"
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/inference.GRPCInferenceService/ModelConfig")(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == "Triton's own words"
    big = _request((1, 1080, 1920, 3)).SerializeToString()  # over gRPC's default 4 MB message limit
    assert channel.unary_unary(INFER)(big, timeout=30) == b"reply:" + big


def test_grpc_a_bad_request_gets_the_projects_line_and_never_reaches_triton(grpc_front):
    import grpc

    channel, upstream = grpc_front
    for request, code, message in [
        (_request((480, 640, 3)), grpc.StatusCode.INVALID_ARGUMENT, "one frame without the batch axis; fix: "),
        (_request((1, 8, 8, 3), nbytes=5), grpc.StatusCode.INVALID_ARGUMENT, "but its data is 5 bytes"),
        (_request((1, 8, 8, 3), model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            channel.unary_unary(INFER)(request.SerializeToString(), timeout=10)
        assert e.value.code() == code and message in e.value.details()
    assert upstream.seen == []
    # not a request the front can parse: passed on for Triton to answer
    assert channel.unary_unary(INFER)(b"\xff\xff\xff", timeout=10) == b"reply:\xff\xff\xff"


def test_grpc_a_stream_answers_a_bad_request_with_an_error_response_and_the_rest_as_usual(grpc_front):
    from tritonclient.grpc import service_pb2 as pb

    channel, upstream = grpc_front
    requests = [_request((1, 8, 8, 3), id_="a"), _request((8, 8, 3), id_="b"), _request((1, 4, 4, 3), id_="c")]
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    replies = [pb.ModelStreamInferResponse.FromString(r)
               for r in call(iter([r.SerializeToString() for r in requests]), timeout=20)]
    by_id = {r.infer_response.id: r.error_message for r in replies}
    assert by_id.keys() == {"a", "b", "c"} and by_id["a"] == by_id["c"] == ""
    assert by_id["b"].startswith("[request id: b] ") and "one frame without the batch axis; fix: " in by_id["b"]
    assert [pb.ModelInferRequest.FromString(d).id for _, d, _ in upstream.seen] == ["a", "c"]


def test_grpc_nothing_behind_the_front_is_unavailable(models):
    import grpc

    port, dead = loopback_ports(2)
    with Front("127.0.0.1", 0, port, 0, dead, models).start():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as e:
            channel.unary_unary("/inference.GRPCInferenceService/ServerReady")(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "Triton is not answering" in e.value.details()
        assert str(dead) not in e.value.details()


def test_http_an_idle_connection_is_closed_and_the_server_header_names_no_python(http_front, monkeypatch):
    import engine.serve.http_front as hf

    front, port, upstream = http_front
    monkeypatch.setattr(hf._Handler, "timeout", 0.5)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v2/health/live")
    reply = conn.getresponse()
    reply.read()
    assert reply.getheader("Server") == "engine.serve"
    t0 = time.monotonic()
    assert conn.sock.recv(1) == b"" and time.monotonic() - t0 < 5  # closed by the front after 0.5 s idle
    conn.close()


def test_http_every_method_passes_on_and_a_form_content_type_is_dropped_from_inference_requests(http_front):
    front, port, upstream = http_front
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for method in ("HEAD", "OPTIONS", "PATCH", "GET"):  # one kept-alive connection: HEAD leaves no body behind
        conn.request(method, "/v2/health/ready")
        reply = conn.getresponse()
        data = reply.read()
        assert reply.status == 200 and upstream.seen[-1][0] == method
        assert data == b"" if method == "HEAD" else json.loads(data)["method"] == method
    conn.close()
    body, head = _infer_body((1, 8, 8, 3))
    for kind, kept in (("application/x-www-form-urlencoded", False), ("application/octet-stream", True)):
        status, _, _ = _post(port, "/v2/models/yolo/infer", body,
                             {"Inference-Header-Content-Length": str(head), "Content-Type": kind})
        assert status == 200 and ("Content-Type" in upstream.seen[-1][2]) == kept  # Triton 2.51 crashed on a form


def test_http_a_header_the_front_cannot_read_goes_to_triton_and_logs_nothing(http_front, caplog):
    front, port, upstream = http_front
    for head in (b'{"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, Infinity, 8, 3]}]}',
                 b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        status, _, _ = _post(port, "/v2/models/yolo/infer", head, {})
        assert status == 200 and upstream.seen[-1][3] == head
    assert "HTTP front" not in caplog.text


def test_names_from_clients_cannot_forge_a_log_line_or_a_second_line_of_an_answer(http_front, grpc_front, caplog):
    import grpc

    front, port, upstream = http_front
    body, head = _infer_body((1, 8, 8, 3))
    status, _, data = _post(port, "/v2/models/x%0AFORGED%20LINE/infer", body,
                            {"Inference-Header-Content-Length": str(head)})
    text = json.loads(data)["error"]
    assert status == 404 and "\n" not in text and "x\\nFORGED LINE" in text
    channel, _ = grpc_front
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary(INFER)(_request((1, 8, 8, 3), model="y\nFORGED " + "z" * 500).SerializeToString(),
                                   timeout=10)
    assert "\n" not in e.value.details() and "y\\nFORGED" in e.value.details() and "z" * 100 not in e.value.details()
    assert not [line for line in caplog.text.splitlines() if line.startswith("FORGED")]


def test_http_bodies_the_front_will_not_read(http_front):
    front, port, upstream = http_front
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # curl's Expect: 100-continue
        s.sendall(b"POST /v2/models/yolo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                  b"Expect: 100-continue\r\n\r\n" % ((1 << 30) + 1))
        assert s.recv(65536).startswith(b"HTTP/1.1 413")  # not "100 Continue": the client never sends the body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v2/models/yolo/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"-1\r\nabc\r\n0\r\n\r\n")
        assert s.recv(65536) == b""  # a negative chunk size: the connection closes
    assert upstream.seen == []


def test_grpc_held_streams_do_not_stall_other_calls(grpc_front):
    """Each open stream holds one of the front's threads for its whole life: 80 idle ones, then a call."""
    import queue

    channel, upstream = grpc_front
    stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    feeds = [queue.Queue() for _ in range(80)]
    calls = [stream(iter(q.get, None)) for q in feeds]
    try:
        time.sleep(0.5)
        assert channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"", timeout=10) == b"reply:"
    finally:
        for q in feeds:
            q.put(None)
        for c in calls:
            c.cancel()


def test_grpc_calls_succeed_soon_after_triton_starts_answering(models):
    """Calls made while Triton starts put the front's channel in reconnect backoff (gRPC's default grows to
    2 minutes): once Triton listens, a call succeeds within 1.5 s, not after the backoff."""
    import grpc

    port, later = loopback_ports(2)
    with Front("127.0.0.1", 0, port, 0, later, models).start():
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive")
            deadline = time.monotonic() + 12  # a client polling a slow start (gRPC's own backoff reaches ~4 s)
            while time.monotonic() < deadline:
                with pytest.raises(grpc.RpcError):
                    live(b"", timeout=5)
                time.sleep(0.2)
            class Live:  # Triton, answering at last
                def service(self, details):
                    return grpc.unary_unary_rpc_method_handler(lambda data, ctx: b"reply:")

            triton = grpc.server(ThreadPoolExecutor(4), handlers=[Live()])
            assert triton.add_insecure_port(f"127.0.0.1:{later}") == later
            triton.start()
            try:
                answered, t0 = None, time.monotonic()
                while answered is None and time.monotonic() - t0 < 1.5:
                    try:
                        answered = live(b"", timeout=5)
                    except grpc.RpcError:
                        time.sleep(0.1)
                assert answered == b"reply:", "still UNAVAILABLE 1.5 s after Triton started answering"
            finally:
                triton.stop(None)


def test_http_connection_headers_say_what_the_front_does_and_a_cut_upload_is_not_passed_on(http_front):
    front, port, upstream = http_front
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # HTTP/1.0 asking to keep it open
        s.sendall(b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        time.sleep(0.3)
        reply = s.recv(65536)
        assert b"\r\nConnection: keep-alive\r\n" in reply
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # still open
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close\r\n" in reply
    seen = len(upstream.seen)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v2/models/yolo/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        s.shutdown(socket.SHUT_WR)  # gone after 10 of 1000 bytes
        assert s.recv(65536) == b""
    assert len(upstream.seen) == seen

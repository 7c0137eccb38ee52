"""What ``engine.serve`` picks when ``--dynamic-batching``, ``--instances`` and ``--threads`` are left out.

On a GPU: one instance and Triton's dynamic batcher, which turns concurrent requests into one batched
inference (a GPU runs a batch of 8 in little more than the time of one).

On a CPU the batcher does not pay, so it is off by default, and the cores are shared out as the stream's
:class:`~engine.pool.DetectorPool` shares them: two instances where there are two cores or more
(:func:`~engine.pool.auto_workers`), each with half the cores (one thread each on two cores), ONNX Runtime not
spinning between calls. Why, from CPU time per
served frame of every process (client, Triton, the Python-backend stubs running the Detectors; ``scripts/triton_load.py``
reports it, and ``benchmarks/RESULTS.md`` has the run):

- batched inference costs a CPU about as much per frame as one frame at a time (ONNX Runtime already
  spreads one frame's convolutions over every core), so a batch saves only the per-request hop through
  the stub, and Triton's batcher spends more CPU per frame than it saves;
- batches form only when the one instance is the bottleneck, and on a CPU it is not: the clients, Triton's
  gRPC front end and the stub need the same cores, so under 8 clients the batcher gathers little more than
  one request a batch;
- a multi-threaded ONNX Runtime session spins its threads between operators and calls (its default), taking
  CPU from the threads that move requests; one-thread sessions do not spin, and one per core serves the most
  frames per CPU second.

Explicit values always win: ``--dynamic-batching on`` forces the batcher on a CPU, ``--instances 1 --threads
0`` gives one session all cores.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path


def runs_on_gpu(model: str | Path) -> bool:
    """Whether ``model`` runs on an NVIDIA GPU by default: a TensorRT engine, or ONNX with CUDA in ONNX Runtime."""
    from ..artifacts import kind_of
    from ..backends import backend_for
    from ..errors import BackendUnavailableError

    kind = kind_of(model)
    if kind is not None and kind.is_engine:
        return True
    try:
        cls = backend_for(model, "auto")
    except BackendUnavailableError:
        return False  # the Detector that loads it says why
    return getattr(cls, "name", None) == "onnxruntime" and cls.uses_cuda("auto")


def resolve(cfg):
    """``cfg`` (a :class:`~engine.serve.server.ServeConfig`) with its ``None`` fields decided as the module says."""
    from ..pool import auto_workers, default_threads

    gpu = runs_on_gpu(cfg.model)
    instances = cfg.instances if cfg.instances is not None else (1 if gpu else auto_workers(cfg.model, None))
    threads = cfg.threads
    if threads is None:
        threads = 0 if gpu or instances == 1 else default_threads(instances)
    batching = cfg.dynamic_batching if cfg.dynamic_batching is not None else gpu
    return dataclasses.replace(cfg, instances=instances, threads=threads, dynamic_batching=batching)

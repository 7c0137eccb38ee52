"""The live status page of a stream (``python -m engine.stream --http PORT``): standard library only.

:class:`StatusPage` is a :class:`~engine.stream.processors.Processor`: it keeps each stream's newest
result and serves the page, JSON and Prometheus metrics from its own threads.
"""
from .server import StatusPage

__all__ = ["StatusPage"]

"""Serving through NVIDIA Triton: ``python -m engine.serve`` runs a Detector behind Triton's HTTP/gRPC.

:mod:`.protocol` is the wire format (also for clients), :mod:`.server` starts Triton (the binary nvidia-pytriton
bundles, :mod:`.triton_process`), :mod:`.triton_model` runs a Detector inside Triton's Python backend,
:mod:`.handler` is what it does with a batch of requests, :mod:`.settings` what each stub is told, :mod:`.cli` is
the command line.
"""
from .protocol import (ENCODED_INPUT, IMAGE_INPUT, OUTPUTS, detections_from_outputs, frames_from_encoded_input,
                       frames_from_image_input, pack_outputs)
from .handler import DetectorModel
from .server import ServeConfig, serve

__all__ = ["ServeConfig", "serve", "DetectorModel", "IMAGE_INPUT", "ENCODED_INPUT", "OUTPUTS", "pack_outputs",
           "detections_from_outputs", "frames_from_image_input", "frames_from_encoded_input", "main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.serve``."""
    from .cli import main as cli_main

    return cli_main(argv)

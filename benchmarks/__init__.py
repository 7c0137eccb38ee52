"""Benchmarks: ms/frame per stage and mAP, side by side with Ultralytics. Entry point: python -m benchmarks.run."""

"""Build-side tools: export to ONNX/TensorRT and the Ultralytics reference predictor."""

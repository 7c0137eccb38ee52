"""INT8 calibration: data readers and strategies (see the INT8 issue). Uses engine.preprocess for the letterbox."""

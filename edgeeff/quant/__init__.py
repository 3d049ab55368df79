"""Quantization policy: int8 recipes per CPU, per-block sensitivity, the float-fallback budget, calibration sweep, CI gate."""

"""Quantization, codecs and the .tqm container."""

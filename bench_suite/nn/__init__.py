"""Quantized DGL layers, backbones and propagations."""

"""Anomaly detection with a healthy diffusion prior: one file per paper, one interface
(:mod:`meddiff.methods.detection.interface`), registered in :mod:`meddiff.methods.registry`.
"""

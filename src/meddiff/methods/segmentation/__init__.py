"""Segmentation methods, registered in :mod:`meddiff.methods.registry`."""

"""meddiff: diffusion models for medical image analysis on one shared, tested core.

Layers (imports point downwards only; ``tests/test_layering.py`` checks it):
    cli -> api (+ demo) -> tasks -> methods -> {core, consistency, physics, nets, zoo, data, eval}
    train -> {core, data, nets, zoo};  base: errors, config, device
The core is modality-agnostic; physics knows no diffusion; data and nets know no method; the
inference API and the methods know no trainer.
"""
__version__ = "0.1.0"

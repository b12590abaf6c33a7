"""meddiff: diffusion models for medical image analysis on one shared, tested core.

Layers (dependencies point downwards only):
    cli -> api -> methods -> {core, consistency, physics, nets, data, train, eval, zoo}
The core is modality-agnostic; physics knows no diffusion; data and nets know no method.
"""
__version__ = "0.1.0"

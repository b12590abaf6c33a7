"""Reconstruction methods for linear inverse problems ``y = A x + n`` (MRI, CT, any
:class:`~meddiff.physics.base.LinearOperator`): one file per paper, one interface
(:mod:`meddiff.methods.reconstruction.interface`), registered in :mod:`meddiff.methods.registry`.
"""

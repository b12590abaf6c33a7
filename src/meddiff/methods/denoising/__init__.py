"""Denoising methods: Gaussian denoising with an unconditional prior (Tweedie / partial
diffusion), low-dose CT (C1), low-count PET (P1) and OCT speckle (C3). The interface is
:mod:`meddiff.methods.denoising.interface`."""

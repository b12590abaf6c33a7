"""R9, score-MRI (Chung & Ye 2022, "Score-based diffusion models for accelerated MRI", Medical
Image Analysis 2022, arXiv 2110.05243)."""
from __future__ import annotations

from meddiff.consistency.steps import projection_callback
from meddiff.errors import InputError
from meddiff.methods.reconstruction.interface import Problem, Reconstruction, run_sampler
from meddiff.methods.registry import register


@register("score-mri", family="reconstruction", system="R9", options=("steps", "t0", "init"),
          summary="R9 score-MRI: predictor-corrector sampling + projection onto A x = y")
def score_mri(p: Problem, sampler: str = "pc_vp", snr: float = 0.16,
              n_corrector: int = 1) -> Reconstruction:
    """Predictor-corrector sampling (sec. 3) of the VE (``pc_ve``) or VP (``pc_vp``) SDE with
    the projection onto ``{A x = y}`` (replace the sampled k-space) after every step. The
    result satisfies ``A x = y`` up to the accuracy of ``A^+``."""
    if sampler not in ("pc_ve", "pc_vp"):
        raise InputError("score-mri uses a predictor-corrector sampler (pc_ve or pc_vp), "
                         f"not {sampler!r}")
    cb = projection_callback(p.op, p.y, p.model.schedule, p.noise_var)
    return Reconstruction(run_sampler(p, sampler, cb, snr=snr, n_corrector=n_corrector))

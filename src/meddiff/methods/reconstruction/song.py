"""C4, score-based inverse problems (Song, Shen, Xing & Ermon 2022, "Solving inverse problems in
medical imaging with score-based generative models", ICLR, arXiv 2111.08005)."""
from __future__ import annotations

from meddiff.consistency.steps import song_callback
from meddiff.methods.reconstruction.interface import Problem, Reconstruction, run_sampler
from meddiff.methods.registry import register


@register("song", family="reconstruction", system="C4", options=("steps", "t0", "init"),
          summary="C4 Song: lambda-weighted blend with the noised measurement after each step")
def song(p: Problem, lam: float = 1.0, sampler: str = "pc_vp", **sampler_opts) -> Reconstruction:
    """Sec. 3.2, inside PC sampling: after every step blend the state with the measurement
    noised to the state's level, weight ``lam`` in [0, 1] on the measured subspace."""
    cb = song_callback(p.op, p.y, p.model.schedule, lam, p.generator, p.noise_var)
    return Reconstruction(run_sampler(p, sampler, cb, **sampler_opts))

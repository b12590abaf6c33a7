"""Operator speed: meddiff's explicit adjoints vs straightforward autograd-adjoint versions.

    .venv/bin/python bench/operators.py              # -> bench/results/operators.json
    .venv/bin/python bench/operators.py --clinical   # only the 512 x 512 CT row, merged in

Per operator, the median wall time (ms) of ``A`` and of ``A^H`` (batch 8, float32 / complex64,
CPU, torch threads as configured) for:
- meddiff: the operators of :mod:`meddiff.physics` (MRI: centred orthonormal FFT with mask and
  coil maps; CT: a precomputed sparse system matrix with its exact transpose);
- autograd: the adjoint taken as the vector-Jacobian product of the same forward, ``A^H y =
  grad_x Re<A x, y>`` (one forward + one backward per call, the common shortcut);
- CT only, rotate-and-sum: the textbook Radon transform (rotate the image by each angle with
  bilinear ``grid_sample``, sum the columns) with its autograd adjoint.
The adjoint mismatch ``|<A x, y> - <x, A^H y>| / (|A x| |y|)`` is reported for each.

``ct_clinical``: CT at clinical size (512 x 512, 720 views, batch 1), where the operator's
``auto`` backend is the matrix-free projector (:mod:`meddiff.physics.radon`): median seconds
of ``A`` and ``A^H``, the growth of the process's peak resident memory during them (measured
first, before anything else allocates) and the estimated size of the sparse matrix pair it
replaces.
"""
from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from meddiff.data.writers import atomic_write
from meddiff.physics import MultiCoilMRI, SingleCoilMRI, SparseViewCT, birdcage_maps, random_mask_1d
from meddiff.physics.ct import estimated_matrix_bytes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "operators.json"
BATCH, REPEATS = 8, 20
CLINICAL_SIZE, CLINICAL_VIEWS, CLINICAL_REPEATS = 512, 720, 3


def timed(fn, *args) -> float:
    """Median milliseconds of ``fn(*args)`` over ``REPEATS`` runs after two warm-ups."""
    for _ in range(2):
        fn(*args)
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def autograd_adjoint(forward):
    """``y -> grad_x Re<forward(x), y>`` at x = 0 (exact for a linear forward)."""
    def adjoint(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        x = torch.zeros_like(like, requires_grad=True)
        out = forward(x)
        (grad,) = torch.autograd.grad((out.conj() * y).real.sum(), x)
        return grad
    return adjoint


def rotate_sum_radon(angles: torch.Tensor, size: int):
    """Textbook Radon: rotate by each angle (bilinear), sum along rows; (B, 1, S, S) ->
    (B, 1, n_views, S). Detector width = the image side (the inscribed circle)."""
    c, s = torch.cos(angles).float(), torch.sin(angles).float()
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], -1),
                         torch.stack([s, c, torch.zeros_like(c)], -1)], 1)  # (V, 2, 3)

    def forward(x: torch.Tensor) -> torch.Tensor:
        b, v = x.shape[0], len(angles)
        grid = F.affine_grid(theta.repeat(b, 1, 1), (b * v, 1, size, size), align_corners=False)
        rot = F.grid_sample(x.repeat_interleave(v, 0), grid, align_corners=False)
        return rot.sum(-2).reshape(b, 1, v, size)
    return forward


def mismatch(forward, adjoint, x, y) -> float:
    ax = forward(x)
    lhs = (ax.conj() * y).real.sum()
    rhs = (x.conj() * adjoint(y)).real.sum()
    return float((lhs - rhs).abs() / (ax.norm() * y.norm()))


def cases(size: int) -> dict:
    g = torch.Generator().manual_seed(0)
    mask = random_mask_1d((size, size), 4.0, seed=0)
    img_c = torch.randn(BATCH, 1, size, size, dtype=torch.complex64, generator=g)
    img_r = torch.randn(BATCH, 1, size, size, generator=g)
    ct = SparseViewCT(60, size)
    out = {}
    for name, op, x in (("MRI single-coil 4x", SingleCoilMRI(mask), img_c),
                        ("MRI 8 coils 4x", MultiCoilMRI(mask, birdcage_maps((size, size), 8)), img_c),
                        ("CT 60 views", ct, img_r)):
        y = op.A(x)
        grad_adj = autograd_adjoint(op.A)
        out[name] = {"meddiff": {"A_ms": timed(op.A, x), "A_adjoint_ms": timed(op.A_adjoint, y),
                                 "adjoint_mismatch": mismatch(op.A, op.A_adjoint, x, y)},
                     "autograd adjoint": {"A_ms": timed(op.A, x),
                                          "A_adjoint_ms": timed(grad_adj, y, x),
                                          "adjoint_mismatch": mismatch(op.A, lambda v: grad_adj(v, x), x, y)}}
    radon = rotate_sum_radon(ct.angles, size)
    y = radon(img_r)
    adj = autograd_adjoint(radon)
    out["CT 60 views"]["rotate-and-sum + autograd"] = {
        "A_ms": timed(radon, img_r), "A_adjoint_ms": timed(adj, y, img_r),
        "adjoint_mismatch": mismatch(radon, lambda v: adj(v, img_r), img_r, y)}
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median_seconds(fn, arg: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Median seconds of ``fn(arg)`` over ``CLINICAL_REPEATS`` runs (no warm-up) and its output."""
    times = []
    for _ in range(CLINICAL_REPEATS):
        t = time.perf_counter()
        out = fn(arg)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 2), out


def clinical_ct() -> dict:
    """A and A^H of the default CT operator at 512 x 512 with 720 views, batch 1 (see above)."""
    start = time.perf_counter()
    op = SparseViewCT(CLINICAL_VIEWS, CLINICAL_SIZE)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, CLINICAL_SIZE, CLINICAL_SIZE, generator=g)
    y = torch.randn(1, 1, op.n_views, op.n_detectors, generator=g)
    rss = _peak_rss_mb()
    a_s, ax = _median_seconds(op.A, x)
    at_s, aty = _median_seconds(op.A_adjoint, y)
    growth = _peak_rss_mb() - rss
    inner = float(((ax * y).sum() - (x * aty).sum()).abs() / (ax.norm() * y.norm()))
    return {"size": CLINICAL_SIZE, "views": CLINICAL_VIEWS, "detectors": op.n_detectors,
            "batch": 1, "backend": op.backend, "threads": torch.get_num_threads(),
            "chunk_views": op.projector.views_per_chunk(1, x.device), "A_s": a_s,
            "A_adjoint_s": at_s, "peak_rss_growth_mb": round(growth, 1),
            "matrix_estimated_gb": round(estimated_matrix_bytes(CLINICAL_SIZE, CLINICAL_SIZE,
                                                                CLINICAL_VIEWS) / 1e9, 2),
            "adjoint_mismatch": inner, "seconds": round(time.perf_counter() - start, 1)}


def _print_clinical(r: dict) -> None:
    print(f"CT {r['size']} px {r['views']} views ({r['backend']}, {r['chunk_views']} views/chunk): "
          f"A {r['A_s']} s  A^H {r['A_adjoint_s']} s  peak RSS +{r['peak_rss_growth_mb']} MB "
          f"(matrix ~{r['matrix_estimated_gb']} GB)  mismatch {r['adjoint_mismatch']:.1e}")


def _write(doc: dict) -> None:
    atomic_write(OUT, lambda fh: fh.write((json.dumps(doc, indent=2) + "\n").encode()))


def main() -> None:
    if sys.argv[1:] == ["--clinical"]:  # only the clinical-size row, merged into the results
        doc = json.loads(OUT.read_text()) if OUT.exists() else {}
        doc["ct_clinical"] = clinical_ct()
        _print_clinical(doc["ct_clinical"])
        _write(doc)
        print(f"wrote {OUT} ({doc['ct_clinical']['seconds']} s)")
        return
    start = time.perf_counter()
    clinical = clinical_ct()  # first: its peak-memory growth is only visible in a fresh process
    doc = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "batch": BATCH, "repeats": REPEATS,
           "sizes": {str(s): cases(s) for s in (64, 128)}, "ct_clinical": clinical}
    doc["seconds"] = round(time.perf_counter() - start, 1)
    for size, table in doc["sizes"].items():
        for op, impls in table.items():
            for impl, r in impls.items():
                print(f"{size:>4} px  {op:20s} {impl:28s} A {r['A_ms']:8.3f} ms  "
                      f"A^H {r['A_adjoint_ms']:8.3f} ms  mismatch {r['adjoint_mismatch']:.1e}")
    _print_clinical(clinical)
    _write(doc)
    print(f"wrote {OUT} ({doc['seconds']} s)")


if __name__ == "__main__":
    main()

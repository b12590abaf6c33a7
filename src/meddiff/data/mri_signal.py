"""MR contrast simulation from tissue fraction maps with the classical signal equations.

Spin echo (Bloch-equation steady state for TR >> T2, e.g. Haacke, Brown, Thompson, Venkatesan
(1999), "Magnetic Resonance Imaging: Physical Principles and Sequence Design", eq. 8.18):

    S_SE = PD * (1 - exp(-TR/T1)) * exp(-TE/T2)

Inversion recovery (Haacke et al. 1999, eq. 8.32; magnitude image, FLAIR with long TI nulling
CSF as in Hajnal et al. (1992), "Use of fluid attenuated inversion recovery (FLAIR) pulse
sequences in MRI of the brain", J. Comput. Assist. Tomogr. 16(6):841-844):

    S_IR = PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| * exp(-TE/T2)

Partial-volume mixing (each voxel is a sum of its tissue compartments):

    S(x) = sum_k f_k(x) * S_k,    f_k = tissue fractions in [0, 1].

Tissue values are 1.5-3 T textbook figures (WM T1/T2 ~ 830/80 ms, GM ~ 1330/110 ms,
CSF ~ 4000/2000 ms; PD 0.69 / 0.80 / 1.0); per-draw jitter is +-10 % on T1 and T2.
Lesions are an extra compartment (bright on T2w/FLAIR, slightly hypointense on T1w).

Output intensity (*image space* [0, 1]): :func:`render_contrast` divides by the brightest pure
compartment of the current draw (not by an image percentile, which would clip bright lesions
and make the scale depend on the lesion load).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from meddiff.errors import ConfigError

CONTRASTS = ("T1w", "T2w", "PDw", "FLAIR")
#: Order of compartments in the fraction stacks used everywhere in meddiff.data.
TISSUES = ("csf", "gm", "wm", "lesion")


@dataclass(frozen=True)
class Tissue:
    """Relaxation parameters of one tissue: proton density (relative), T1 and T2 in ms."""

    pd: float
    t1: float
    t2: float


DEFAULT_TISSUES: dict[str, Tissue] = {
    "csf": Tissue(pd=1.00, t1=4000.0, t2=2000.0),
    "gm": Tissue(pd=0.80, t1=1330.0, t2=110.0),
    "wm": Tissue(pd=0.69, t1=830.0, t2=80.0),
    "lesion": Tissue(pd=0.78, t1=1250.0, t2=170.0),
}


@dataclass(frozen=True)
class Sequence:
    """Acquisition parameters in ms; ``ti`` is None for spin echo, set for inversion recovery."""

    tr: float
    te: float
    ti: float | None = None


# Uniform sampling ranges (ms) of clinical spin-echo / FLAIR protocols at 1.5-3 T.
_RANGES = {
    "T1w": {"tr": (400.0, 650.0), "te": (8.0, 15.0)},
    "T2w": {"tr": (3000.0, 6000.0), "te": (80.0, 120.0)},
    "PDw": {"tr": (2500.0, 5000.0), "te": (8.0, 20.0)},
    "FLAIR": {"tr": (8000.0, 11000.0), "te": (80.0, 120.0)},
}


def flair_null_ti(tr: float, t1: float) -> float:
    """TI (ms) that nulls a tissue of longitudinal relaxation ``t1`` in an IR sequence of ``tr``.

    Solves 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0, i.e. TI = T1 ln(2 / (1 + exp(-TR/T1))).
    """
    return float(t1 * np.log(2.0 / (1.0 + np.exp(-tr / t1))))


def sample_sequence(contrast: str, rng: np.random.Generator) -> Sequence:
    """Draw TR/TE (and TI for FLAIR: the nominal CSF null point +-5 %) for ``contrast``."""
    if contrast not in _RANGES:
        raise ConfigError(f"unknown contrast {contrast!r}; expected one of {', '.join(CONTRASTS)}")
    r = _RANGES[contrast]
    tr, te = rng.uniform(*r["tr"]), rng.uniform(*r["te"])
    if contrast != "FLAIR":
        return Sequence(tr=float(tr), te=float(te))
    ti = flair_null_ti(tr, DEFAULT_TISSUES["csf"].t1) * rng.uniform(0.95, 1.05)
    return Sequence(tr=float(tr), te=float(te), ti=float(ti))


def nominal_sequence(contrast: str) -> Sequence:
    """The centre of the sampling ranges of ``contrast`` (deterministic, for tests/figures)."""
    if contrast not in _RANGES:
        raise ConfigError(f"unknown contrast {contrast!r}; expected one of {', '.join(CONTRASTS)}")
    r = _RANGES[contrast]
    tr, te = float(np.mean(r["tr"])), float(np.mean(r["te"]))
    ti = flair_null_ti(tr, DEFAULT_TISSUES["csf"].t1) if contrast == "FLAIR" else None
    return Sequence(tr=tr, te=te, ti=ti)


def spin_echo(pd, t1, t2, tr: float, te: float):
    """S = PD (1 - exp(-TR/T1)) exp(-TE/T2), elementwise on arrays or floats (times in ms)."""
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


def inversion_recovery(pd, t1, t2, tr: float, te: float, ti: float):
    """S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2), elementwise (magnitude IR)."""
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def tissue_signal(tissue: Tissue, seq: Sequence) -> float:
    """Signal of a pure compartment of ``tissue`` under ``seq`` (SE if ``seq.ti`` is None)."""
    if seq.ti is None:
        return float(spin_echo(tissue.pd, tissue.t1, tissue.t2, seq.tr, seq.te))
    return float(inversion_recovery(tissue.pd, tissue.t1, tissue.t2, seq.tr, seq.te, seq.ti))


def jitter_tissues(tissues: dict[str, Tissue], rng: np.random.Generator,
                   frac: float = 0.1) -> dict[str, Tissue]:
    """Independently scale each tissue's T1 and T2 by U(1 - frac, 1 + frac)."""
    out = {}
    for name, t in tissues.items():
        s1, s2 = rng.uniform(1.0 - frac, 1.0 + frac, size=2)
        out[name] = replace(t, t1=t.t1 * float(s1), t2=t.t2 * float(s2))
    return out


def compartment_signals(seq: Sequence, tissues: dict[str, Tissue] | None = None,
                        names: tuple[str, ...] = TISSUES) -> np.ndarray:
    """Vector (K,) float32 of pure-tissue signals for compartments ``names`` under ``seq``."""
    tissues = DEFAULT_TISSUES if tissues is None else tissues
    return np.array([tissue_signal(tissues[n], seq) for n in names], dtype=np.float32)


def mix(fractions: np.ndarray, signals: np.ndarray) -> np.ndarray:
    """Partial-volume signal sum_k f_k S_k: fractions (K, *spatial), signals (K,) -> (*spatial)."""
    if fractions.shape[0] != signals.shape[0]:
        raise ConfigError(f"{fractions.shape[0]} fraction maps for {signals.shape[0]} signals")
    out = np.zeros(fractions.shape[1:], dtype=np.float32)
    for f, s in zip(fractions, signals):  # K <= 4 multiply-adds; avoids threaded BLAS overhead
        out += np.float32(s) * f
    return out


def render_contrast(fractions: np.ndarray, seq: Sequence,
                    tissues: dict[str, Tissue] | None = None) -> np.ndarray:
    """Partial-volume image of a fraction stack (K, *spatial) ordered as ``TISSUES[:K]``.

    Normalisation (image space): the signal is divided by the brightest *pure* compartment
    among all of ``TISSUES`` (CSF, GM, WM, lesion) under ``seq``, whether or not the image
    contains it. Mixtures are convex combinations, so the result lies in [0, 1] without
    clipping, pure tissues get fixed values, and healthy and lesioned images share one scale
    (a healthy prior sees test lesions at the intensity they would have had in training).
    """
    tissues = DEFAULT_TISSUES if tissues is None else tissues
    signals = compartment_signals(seq, tissues, TISSUES)
    out = mix(fractions, signals[:fractions.shape[0]]) / max(float(signals.max()), 1e-12)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def simulate(fractions: np.ndarray, contrast: str, rng: np.random.Generator | None = None,
             tissues: dict[str, Tissue] | None = None, jitter: float = 0.1) -> np.ndarray:
    """Render one MR contrast from a fraction stack (K, *spatial) ordered as ``TISSUES[:K]``.

    With ``rng`` the sequence parameters and the +-``jitter`` tissue T1/T2 are drawn; without it
    the nominal sequence and tissue values are used. Returns float32 (*spatial) in [0, 1]
    normalised as in :func:`render_contrast`.
    """
    tissues = DEFAULT_TISSUES if tissues is None else tissues
    if rng is None:
        return render_contrast(fractions, nominal_sequence(contrast), tissues)
    seq = sample_sequence(contrast, rng)
    tissues = jitter_tissues(tissues, rng, jitter) if jitter > 0 else tissues
    return render_contrast(fractions, seq, tissues)

"""Reconstruction of undersampled MRI and sparse-view / low-dose CT: the task behind
``meddiff reconstruct`` (:func:`reconstruct_file`) and ``bench/reconstruction.py``.

    from meddiff.physics.acquisition import simulate_mri
    from meddiff.tasks import reconstruction as rt
    from meddiff.tasks.inputs import check_size, load_model, read_slices
    model = load_model("brain-prior-64")
    image01 = read_slices("t1.nii.gz", model.spec.image_size).images          # (N, 1, 64, 64)
    op, y = simulate_mri(image01, mask="random", acceleration=4, seed=0)
    res = rt.run(model, op, y, "score-mri", steps=100, seed=0)                # res.image01
    base = rt.run(None, op, y, "zero-filled")

Measurement convention: the operator acts on images in *image space* and ``y`` is the
measurement of the image-space image (:mod:`meddiff.physics.acquisition`; real k-space scaled
by :func:`meddiff.physics.kspace.measurement_from_kspace`). Baselines use ``y`` as it is; for
the diffusion methods :func:`run` converts it to the measurement of the *model-space* image
``2 x - 1`` with :meth:`~meddiff.consistency.views.RealView.model_measurement` (``2 y -
A(1)``), the input of :func:`meddiff.methods.reconstruction.interface.reconstruct`, and maps
the result back to [0, 1].

Complex images: a complex prior (``spec.intensity == "complex"``, e.g. ``mri-complex-64``)
reconstructs the complex image as two channels (``view="channels"``, model space = image
space, so ``y`` is used unchanged). With a real-valued prior, ``view="real"`` (its default)
reconstructs a real image cast to complex (simulated MRI of magnitude images),
``view="phase"`` the magnitude of an image with phase, the phase being estimated from the
fully sampled k-space centre (:class:`~meddiff.physics.mri.PhaseModulated`), and
``view="batch"`` the real and imaginary parts as two real images (Chung & Ye 2022, arXiv
2110.05243, sec. 3.3). Results are magnitude images in [0, 1] (``real`` / ``phase``: the real
part of the reconstructed real image).

Sizes: the priors are fully convolutional, so images and k-space keep their own grid (native
resolution); image slices whose sides are not multiples of the network's divisor are
reflect-padded to them (the acquisition is simulated on the padded slices; results, metrics
and panels are cropped back to the file's region), k-space of such sizes is refused (padding
it in image space would change the measurement). ``resize=True`` resamples image files to
the model's training size and the outputs back to the file's grid; k-space is never
resampled.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from meddiff.consistency.views import RealView
from meddiff.data.intensity import image_space, model_space
from meddiff.data.writers import all_or_nothing, save_nifti
from meddiff.data.sinogram_io import is_sinogram_file, load_sinogram
from meddiff.errors import InputError
from meddiff.eval.metrics import nmse_batch, psnr_batch, ssim_batch
from meddiff.methods import registry
from meddiff.methods.reconstruction.ccdf import warm_start_time
from meddiff.methods.reconstruction.interface import Problem, reconstruct
from meddiff.physics.acquisition import (DEFAULT_ACCELERATION, check_acceleration, is_ct,
                                         measurement_from_sinogram, simulate_ct, simulate_mri)
from meddiff.physics.base import LinearOperator
from meddiff.physics.kspace import measurement_from_kspace
from meddiff.physics.mri import MultiCoilMRI, PhaseModulated, SingleCoilMRI, estimate_phase
from meddiff.physics.noise import GaussianNoise
from meddiff.tasks.batch import file_task, network_bar
from meddiff.tasks.inputs import check_size, load_model, read_slices, reading
from meddiff.tasks.outputs import (Grid, check_outputs, output_paths, reconstruction_panel,
                                  to_file_grid)
from meddiff.tasks.selfcheck import checked_run
from meddiff.zoo.catalogue import bundled
from meddiff.zoo.store import load

# the bundled priors per modality: the native-resolution priors run on slices of any size at
# 0.7-3 mm pixels (bench/resolution.py, bench/ct_resolution.py); the *-64 priors stay for the
# 64 px, 2.95 mm protocol of bench/reconstruction.py
DEFAULT_MODELS = {"mri": "brain-prior-native", "ct": "ct-prior-native"}
KSPACE_SUFFIXES = (".h5", ".hdf5")


def baselines() -> tuple[str, ...]:
    """The registered reconstruction baselines (also the warm-start ``init`` choices)."""
    return tuple(n for n, i in registry.methods("reconstruction").items() if i.baseline)


@dataclass
class Result:
    """A reconstruction in image space: ``image01`` (B, 1, H, W) float32 in [0, 1] (magnitude),
    ``std01`` the per-pixel posterior std in image-space units or None, ``nfe`` network
    evaluations, ``seconds`` wall time."""

    image01: torch.Tensor
    std01: torch.Tensor | None
    nfe: int
    seconds: float


# ---------------------------------------------------------------------------------- baselines
UNET_DIVISOR = 16  # the supervised UNet halves the image four times


@functools.lru_cache(maxsize=4)
def recon_unet(modality: str, size: int) -> torch.nn.Module:
    """The bundled supervised UNet of ``modality`` (CPU, eval mode): ``recon-unet-{modality}-
    {size}`` when there is one, else the one trained at another size (it is fully
    convolutional; ``size`` must be a multiple of 16 and at least 32: its instance norms
    need more than one pixel at the coarsest level)."""
    if size % UNET_DIVISOR or size < 2 * UNET_DIVISOR:
        raise InputError(f"the supervised UNet needs image sides that are multiples of "
                         f"{UNET_DIVISOR} and at least {2 * UNET_DIVISOR}, got {size}")
    names = [n for n in bundled("recon-unet") if n.startswith(f"recon-unet-{modality}-")]
    name = f"recon-unet-{modality}-{size}"
    if name not in names:
        if not names:
            raise InputError(f"no bundled supervised {modality.upper()} UNet ({name})")
        name = names[0]
    return load(name, kind="recon-unet").net


def _image_size(operator: LinearOperator) -> int:
    return int(operator.img_shape[-1] if is_ct(operator) else operator.mask.shape[-1])


def baseline(operator: LinearOperator, y: torch.Tensor, name: str, lam: float | None = None,
             net: torch.nn.Module | None = None) -> torch.Tensor:
    """A registered baseline (:mod:`meddiff.methods.reconstruction.baselines`) in the
    operator's domain and image-space units: ``zero-filled`` (MRI), ``fbp`` (CT), ``cs``
    (TV weight ``lam * ||A||^2``) or ``unet`` (``net``, default the bundled UNet of the
    modality and size)."""
    info = registry.methods("reconstruction").get(name)
    if info is None or not info.baseline:
        raise InputError(f"unknown baseline {name!r}; choose from {', '.join(baselines())}")
    opts = {"lam": lam} if "cs_lam" in info.options else {}
    if name == "unet" and net is None:
        net = recon_unet("ct" if is_ct(operator) else "mri", _image_size(operator))
    return registry.get("reconstruction", name)(Problem(net, operator, y), **opts).x


# ---------------------------------------------------------------------------------- running
def _magnitude01(z: torch.Tensor) -> torch.Tensor:
    return (z.abs() if z.is_complex() else z).float().clamp(0, 1).cpu()


def _check_size(model, like: torch.Tensor) -> None:
    """One-line InputError when the network of ``model`` cannot take the images' grid."""
    d = getattr(getattr(getattr(model, "spec", None), "net", None), "divisor", 1)
    h, w = like.shape[-2:]
    if h % d or w % d:
        raise InputError(f"the images are {h}x{w}, the network needs sides divisible by {d}; "
                         "pad or crop the input, or pass --resize")


def _view(intensity: str, view: str | None, operator: LinearOperator) -> str:
    """The model-space view of ``operator`` for a prior of ``intensity``."""
    if intensity == "complex":
        if is_ct(operator):
            raise InputError("a complex-valued prior cannot reconstruct CT; use a CT prior")
        if view not in (None, "channels"):
            raise InputError(f"a complex-valued prior reconstructs two channels; view {view!r} "
                             "needs a real-valued prior")
        return "channels"
    if view == "channels":
        raise InputError("view 'channels' needs a complex-valued (two-channel) prior")
    if view == "phase" and not operator.complex_domain:
        raise InputError("view 'phase' applies to MRI data")
    return view or "real"


def _model_noise_scale(intensity: str) -> float:
    """How much the model-space measurement scales the image-space noise: ``2 y - A(1)`` of a
    ``"unit"`` prior doubles it, a complex prior uses ``y`` unchanged."""
    return 1.0 if intensity == "complex" else 2.0


def noise_variance(operator: LinearOperator, y: torch.Tensor,
                   intensity: str) -> torch.Tensor | None:
    """Per-entry noise variance of the *model-space* measurement (``y``'s shape), from the
    operator's noise model at the image-space measurement ``y``; None without noise."""
    noise = operator.noise
    if noise is None or not hasattr(noise, "variance"):
        return None
    var = noise.variance(y)
    if not bool((var > 0).any()):
        return None
    return var * _model_noise_scale(intensity) ** 2


def run(model, operator: LinearOperator, y: torch.Tensor, method: str, steps: int = 100,
        t0: float | None = None, init: str | None = None, seed: int = 0, view: str | None = None,
        cs_lam: float | None = None, noise_aware: bool = True, **opts) -> Result:
    """Reconstruct image-space images from ``y`` (the measurement of the image-space image).

    Args:
        model: a loaded model (:func:`meddiff.tasks.inputs.load_model`) or a denoiser; unused
            (may be None) for the baselines.
        method: a registered reconstruction method (diffusion or baseline).
        steps: reverse steps of a diffusion method (over ``[0, t0]`` with a warm start).
        t0, init: R8 warm start (Chung, Sim & Ye 2022, arXiv 2112.05146): start at time
            ``t0`` from the forward-diffused ``init`` baseline (default zero-filled for MRI,
            fbp for CT).
        seed: the diffusion sampler's seed.
        view: for MRI with a real-valued prior ``real`` (default), ``phase`` or ``batch``;
            a complex prior always uses ``channels`` (module docstring).
        cs_lam: CS-TV weight relative to ``||A||^2`` (method ``cs`` and ``init="cs"``).
        noise_aware: when the operator carries a noise model (``noise_std``, ``dose``), weight
            the data-consistency steps by the noise variance (:func:`noise_variance`) instead
            of treating the noisy data as exact.
        **opts: the diffusion method's own options (:mod:`meddiff.methods.reconstruction`).
    Returns:
        :class:`Result` with (B, 1, H, W) images in [0, 1] on the CPU.
    """
    names = registry.methods("reconstruction")
    if method not in names:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(names)}")
    start = time.perf_counter()
    if names[method].baseline:
        if t0 is not None or init is not None:
            raise InputError(f"{method} takes no warm start (t0 / init)")
        z = baseline(operator, y, method, cs_lam)
        return Result(_magnitude01(z), None, 0, time.perf_counter() - start)
    if not (isinstance(steps, int) and steps >= 1):
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if init is not None and t0 is None:
        raise InputError("an init needs a warm-start time t0")
    den = getattr(model, "denoiser", model)
    y = y.to(den.device)
    intensity = getattr(getattr(model, "spec", None), "intensity", "unit")
    view = _view(intensity, view, operator)
    if view == "phase":
        operator, view = PhaseModulated(operator, estimate_phase(operator, y)), "real"
    rv = RealView(operator, view)
    like = rv.A_adjoint(y)
    _check_size(model, like)
    y_model = rv.model_measurement(y, like, intensity)
    init_model = None
    if t0 is not None:
        z0 = baseline(operator, y, init or ("fbp" if is_ct(operator) else "zero-filled"), cs_lam)
        init_model = model_space(rv.from_domain(z0), intensity).clamp(-1, 1).float()
    noise_var = noise_variance(operator, y, intensity) if noise_aware else None
    if method in ("langevin", "ddrm") and isinstance(operator.noise, GaussianNoise):
        opts.setdefault("noise_std", _model_noise_scale(intensity) * operator.noise.sigma)
    with torch.no_grad():
        rec = reconstruct(den, operator, y_model, method, steps, t0, init_model,
                          generator=seed, view=view, noise_var=noise_var, **opts)
    z = rv.to_domain(image_space(rec.x, intensity))
    image01 = _magnitude01(z.real if view == "real" else z)
    std01 = None
    if rec.std is not None:  # the intensity maps are affine: std scales by their slope
        slope = 1.0 if intensity == "complex" else 0.5
        std01 = (rv.to_domain(rec.std).abs() * slope).float().cpu()
    return Result(image01, std01, rec.nfe, time.perf_counter() - start)


def run_coil_by_coil(model, operator: MultiCoilMRI, y: torch.Tensor, method: str,
                     **kw) -> Result:
    """R9's coil-by-coil variant (Chung & Ye 2022, arXiv 2110.05243, sec. 3.4): every coil
    image ``S_c x`` is reconstructed as a single-coil problem with the same mask (the prior sees
    coil images, which look like images with a smooth bias field and phase), and the magnitudes
    are combined by root-sum-of-squares; no coil maps are used. ``y`` (B, C, H, W) complex;
    ``**kw`` as :func:`run`; coil images are complex, so a real-valued prior sees them through
    the ``phase`` view unless ``view`` says otherwise. ``std01`` is propagated to first order,
    ``sqrt(sum_c (|x_c| / rss)^2 std_c^2)``. Costs C times a single-coil reconstruction
    (``nfe`` counts all C)."""
    if not isinstance(operator, MultiCoilMRI):
        raise InputError("coil-by-coil reconstruction needs multi-coil MRI data")
    b, c = y.shape[:2]
    single = SingleCoilMRI(operator.mask, operator.noise)
    if getattr(getattr(model, "spec", None), "intensity", "unit") != "complex":
        kw.setdefault("view", "phase")
    res = run(model, single, y.reshape(b * c, 1, *y.shape[-2:]), method, **kw)
    mags = res.image01.reshape(b, c, *y.shape[-2:])
    combined = mags.pow(2).sum(1, keepdim=True).sqrt()
    std01 = None
    if res.std01 is not None:
        weights = mags / combined.clamp(min=1e-6)
        std01 = (weights * res.std01.reshape(b, c, *y.shape[-2:])).pow(2).sum(1, keepdim=True).sqrt()
    return Result(combined.clamp(0, 1), std01, res.nfe * c, res.seconds)


# ---------------------------------------------------------------------------------- outputs
def metrics(image01: torch.Tensor, reference01: torch.Tensor) -> dict[str, float]:
    """Mean PSNR / SSIM (data range 1) and NMSE over slices, image space."""
    return {"psnr": float(psnr_batch(image01, reference01, 1.0).mean()),
            "ssim": float(ssim_batch(image01, reference01, 1.0).mean()),
            "nmse": float(nmse_batch(image01, reference01).mean())}


@all_or_nothing()
def write_outputs(out_path: str | Path, result: Result, reference01: torch.Tensor | None,
                  baseline01: torch.Tensor, grid: Grid, baseline_name: str = "zero-filled",
                  method: str = "reconstruction") -> dict[str, dict[str, float]]:
    """Write the reconstruction NIfTI (the file's grid and units), the std map
    ``<out>_std.nii[.gz]`` when ``result.std01`` exists, and a PNG panel ``<out>.png`` of the
    middle slice (reference / baseline / reconstruction / |error|). Every file is atomic, and
    the files appear together or not at all.

    ``reference01`` / ``baseline01``: (N, 1, H, W) in [0, 1]. Returns ``{method: {psnr, ssim,
    nmse}, baseline_name: {...}}`` against the reference (data range 1), or ``{}`` without one.
    """
    recon_path, std_path, png_path = output_paths(out_path, "_std", ".png")
    x = result.image01
    if reference01 is not None and tuple(reference01.shape) != tuple(x.shape):
        raise InputError(f"reference shape {tuple(reference01.shape)} does not match the "
                         f"reconstruction {tuple(x.shape)}")
    scores = {} if reference01 is None else {
        method: metrics(x, reference01), baseline_name: metrics(baseline01, reference01)}
    save_nifti(recon_path, to_file_grid(x, grid, "image"), grid.affine)
    if result.std01 is not None:
        save_nifti(std_path, to_file_grid(result.std01, grid, "scale"), grid.affine)
    reconstruction_panel(png_path, x, baseline01, reference01, method, baseline_name,
                         scores.get(method))
    return scores


# ---------------------------------------------------------------------------------- file task
def _input_kind(path: str) -> str:
    """``"kspace"`` (fastMRI-style HDF5), ``"sinogram"`` (HDF5 with a ``sinogram`` dataset,
    :mod:`meddiff.data.sinogram_io`) or ``"image"``."""
    if Path(path).suffix.lower() not in KSPACE_SUFFIXES:
        return "image"
    return "sinogram" if is_sinogram_file(path) else "kspace"


def _check_options(input: str, out: str, kind: str, *, modality, method, mask, acceleration,
                   coils, coil_mode, noise_std, views, dose, steps, t0, t0_noise, init,
                   seed) -> None:
    """Refuse option combinations that do not apply, before any work."""
    ct = modality == "ct"
    choices = registry.methods("reconstruction")
    if modality not in DEFAULT_MODELS:
        raise InputError(f"unknown modality {modality!r}; choose from {', '.join(DEFAULT_MODELS)}")
    if method not in choices:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(choices)}")
    if init is not None and init not in baselines():
        raise InputError(f"unknown init {init!r}; choose from {', '.join(baselines())}")
    if coil_mode not in ("sense", "coil-by-coil"):
        raise InputError(f"unknown coil mode {coil_mode!r}; choose from sense, coil-by-coil")
    kspace = kind == "kspace"
    if kspace and ct:
        raise InputError(f"{input}: k-space input is MRI; drop --modality ct")
    if kind == "sinogram" and not ct:
        raise InputError(f"{input}: a sinogram is CT data; pass --modality ct")
    if kind == "sinogram" and (views is not None or dose is not None):
        raise InputError("--views and --dose simulate an acquisition; a measured sinogram has "
                         "its own views and noise (attribute I0)")
    if ct and (acceleration is not None or coils != 1 or noise_std):
        raise InputError("--acceleration, --coils and --noise-std apply to --modality mri")
    if not ct and (views is not None or dose is not None):
        raise InputError("--views and --dose apply to --modality ct")
    if kspace and (coils != 1 or noise_std):
        raise InputError("--coils and --noise-std apply to simulated MRI, not k-space input")
    if acceleration is not None:
        check_acceleration(acceleration)
    if t0 is not None and t0_noise is not None:
        raise InputError("give the warm start as --t0 or as --t0-noise, not both")
    if t0_noise is not None and not t0_noise > 0:
        raise InputError(f"--t0-noise must be > 0, got {t0_noise}")
    warm = t0 is not None or t0_noise is not None
    if init is not None and not warm:
        raise InputError("--init needs a warm-start time --t0 or --t0-noise")
    if choices[method].baseline and warm:
        raise InputError(f"--t0 / --t0-noise apply to the diffusion methods, not {method}")
    if coil_mode == "coil-by-coil" and (choices[method].baseline or ct):
        raise InputError("--coil-mode coil-by-coil needs multi-coil MRI data and a diffusion "
                         "method")
    if not (isinstance(steps, int) and steps >= 1):
        raise InputError(f"--steps must be an integer >= 1, got {steps!r}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if not Path(input).exists():
        raise InputError(f"{input}: no such file or folder")
    output_paths(out, "_std", ".png")


def _sinogram_problem(input: str, divisor: int, trained):
    """(operator, y, None, grid, None) of a measured sinogram file on its own grid."""
    with reading(input):
        sino = load_sinogram(input)
    check_size(sino.image_size, trained, divisor, f"{input}: the sinogram's image grid",
               resize=False)
    op, y = measurement_from_sinogram(sino.sinogram, sino.angles, sino.pixel_mm,
                                      sino.image_size, sino.I0)
    return op, y, None, Grid.plain(len(y), sino.image_size), None


def _problem(input: str, spec, kind: str, *, modality, mask, acceleration, coils, noise_std,
             views, dose, resize, seed):
    """(operator, y, reference01, grid, view) for the input file on its own grid (view None:
    the model's default, see :func:`run`); ``spec``: the prior's
    :class:`~meddiff.zoo.kinds.DiffusionSpec` (training sizes, the divisor its network needs
    the sides divisible by, real or complex)."""
    size, divisor, trained = spec.image_size, spec.net.divisor, spec.trained_sizes
    if kind == "sinogram":
        if resize:
            raise InputError(f"{input}: --resize does not apply to a measured sinogram")
        return _sinogram_problem(input, divisor, trained)
    if kind == "kspace":
        from meddiff.data.kspace_io import load_kspace

        with reading(input):
            ks = load_kspace(input)
        op, y, ref = measurement_from_kspace(ks.kspace, ks.mask, ks.reference, mask=mask,
                                             acceleration=acceleration, seed=seed, divisor=divisor)
        check_size(tuple(y.shape[-2:]), trained, divisor, f"{input}: k-space images",
                   resize=False)
        return op, y, ref, Grid.plain(len(y), tuple(y.shape[-2:])), \
            "batch" if spec.intensity == "unit" else None
    slices = read_slices(input, size, resize=resize, divisor=divisor, trained=trained)
    image01 = slices.images
    if modality == "ct":
        op, y = simulate_ct(image01, views, dose, seed)
    else:
        accel = DEFAULT_ACCELERATION if acceleration is None else acceleration
        op, y = simulate_mri(image01, mask, accel, coils, noise_std, seed)
    return op, y, image01, Grid.of(slices), None


@file_task("reconstruct")
def reconstruct_file(input, out, *, modality="mri", method="score-mri", mask="random",
                     acceleration=None, coils=1, coil_mode="sense", noise_std=0.0, views=None,
                     dose=None, steps=100, t0=None, t0_noise=None, init=None, cs_lam=None,
                     model=None,
                     resize=False, device="auto", seed=0, self_check=True, progress=False,
                     overwrite=False) -> dict:
    """``meddiff reconstruct``: an image file is the ground truth of a simulated acquisition
    (MRI: undersampled k-space, :func:`~meddiff.physics.acquisition.simulate_mri`; CT:
    sparse-view / low-dose sinogram, :func:`~meddiff.physics.acquisition.simulate_ct`); an
    HDF5 file is fastMRI-style k-space (:func:`~meddiff.physics.kspace.measurement_from_kspace`)
    or, with a ``sinogram`` dataset, a measured CT sinogram (:mod:`meddiff.data.sinogram_io`,
    :func:`~meddiff.physics.acquisition.measurement_from_sinogram`; noise-aware when it
    states its blank-scan counts ``I0``).
    Writes ``out`` (the reconstruction on the file's grid), ``<out>_std`` for methods with an
    uncertainty map and ``<out>.png``. The acquisition is simulated / read at the file's own
    size (image slices reflect-padded to the network's divisor, the results cropped back;
    ``resize``: image files resampled to the model's training size). Every check runs
    before anything is written; existing outputs are replaced only with ``overwrite``, an
    input never (:func:`~meddiff.tasks.outputs.check_outputs`). ``self_check`` (diffusion
    methods with SENSE / single-coil data): the output is the diffusion result blended with
    CS-TV by the held-out check of :mod:`meddiff.tasks.selfcheck` (four runs instead of one).
    Image slices are the file's sections in the models' frame
    (:func:`~meddiff.tasks.inputs.read_slices`); ``progress``: a bar over the prior's network
    calls (stderr). The sidecar ``<out>.json`` records the options, metrics and self-check
    (:mod:`meddiff.tasks.batch`; a folder ``input`` is every file in it, ``out`` a folder).

    Returns ``{"input", "method", "model", "nfe", "seconds", "metrics": [{method, psnr, ssim,
    nmse, nfe, seconds}, ...] (empty without a reference), "outputs": [paths]}``, plus
    ``"self_check"`` (:func:`meddiff.tasks.selfcheck.report`, or ``{"skipped": reason}``) when
    it ran.
    """
    kind = _input_kind(str(input))
    _check_options(str(input), str(out), kind, modality=modality, method=method, mask=mask,
                   acceleration=acceleration, coils=coils, coil_mode=coil_mode,
                   noise_std=noise_std, views=views, dose=dose, steps=steps, t0=t0,
                   t0_noise=t0_noise, init=init, seed=seed)
    check_outputs(output_paths(out, "_std", ".png"), [input], overwrite)
    prior = load_model(model or DEFAULT_MODELS[modality], device=device)
    if t0_noise is not None:
        t0 = warm_start_time(prior.denoiser.schedule, t0_noise)
    op, y, ref, grid, view = _problem(str(input), prior.spec, kind, modality=modality,
                                      mask=mask, acceleration=acceleration, coils=coils,
                                      noise_std=noise_std, views=views, dose=dose, resize=resize,
                                      seed=seed)
    base_name = "fbp" if is_ct(op) else "zero-filled"
    runner = run
    if coil_mode == "coil-by-coil":
        if not isinstance(op, MultiCoilMRI):
            raise InputError("--coil-mode coil-by-coil needs multi-coil data and a diffusion method")
        runner = run_coil_by_coil
    kw = {"steps": steps, "t0": t0, "init": init, "seed": seed, "view": view, "cs_lam": cs_lam}
    check = None
    diffusion = not registry.methods("reconstruction")[method].baseline
    with network_bar(prior.denoiser.net, method, progress and diffusion):
        if self_check and runner is run and diffusion:
            result, check = checked_run(run, prior, op, y, method, **kw)
        else:
            result = runner(prior, op, y, method, **kw)
    base = result if method == base_name else run(None, op, y, base_name)
    # the padding reached the network's divisor: metrics and panels see the file's region
    result, base, ref = grid.crop(result), grid.crop(base), grid.crop(ref)
    scores = write_outputs(out, result, ref, base.image01, grid, base_name, method)
    recon_path, std_path, png_path = output_paths(out, "_std", ".png")
    written = [str(recon_path)] + ([str(std_path)] if result.std01 is not None else []) \
        + [str(png_path)]
    rows = [{"method": name, **s, "nfe": result.nfe if name == method else 0,
             "seconds": result.seconds if name == method else base.seconds}
            for name, s in scores.items()]
    return {"method": method, "model": prior.name, "nfe": result.nfe,
            "seconds": round(result.seconds, 3),
            "metrics": rows, "outputs": written, **({"self_check": check} if check else {})}

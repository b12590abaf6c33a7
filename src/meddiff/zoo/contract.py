"""The one derivation of a model's *input contract*: what it expects of its input (image size,
channels, pixel size, orientation, value range), from its spec and card alone (plain dicts, as
stored in its JSON document; no torch, no trainer).

:func:`input_contract` takes the spec's ``data`` entries (``size``, ``pixel_size``,
``orientation``, ``intensity``, ``space``) where it states them, else derives the rows from the
spec (network size and channels, conditioning, latent autoencoder, intensity convention) and,
for the built-in simulated anatomy, its known geometry; what neither tells is
:data:`NOT_RECORDED`. The markdown model cards state it (:mod:`meddiff.train.cards`), and
:func:`meddiff.zoo.catalogue.contract` answers with it for a model without a markdown card.
"""
from __future__ import annotations

from typing import Any

#: the built-in simulated anatomy (MNI152 2009a, :mod:`meddiff.data.datasets`): a 189 mm square
#: field of view per axial section, rows anterior -> posterior, columns patient left -> right
SIM_FOV_MM = 189.0
#: words by which the data descriptions of the built-in simulation name it
SIM_MARKERS = ("MNI152", "simulated brain")
SIM_ORIENTATION = ("axial sections, rows anterior -> posterior, columns patient left -> right "
                   "(neurological display)")
NOT_RECORDED = "not recorded in the model's spec (that of its training images; see Data)"
UNIT_RANGE = ("image space [0, 1] (meddiff's data contract; the objective maps it to the "
              "network's range)")
COMPLEX_RANGE = "real and imaginary parts of a complex image of magnitude <= 1"
READERS = ("meddiff's readers map a file's values to image space [0, 1] first (robust "
           "percentiles, or a fixed window)")


def _mm(value: float) -> str:
    return f"{value:.2f}"


def input_contract(spec: dict[str, Any], card: dict[str, Any] | None = None
                   ) -> list[tuple[str, str]]:
    """``(what, text)`` rows of what a model expects: image size, channels, pixel size,
    orientation, value range (see the module docstring). ``spec``: the store document's spec
    as a plain dict (a ``data`` or ``net`` entry that is not a dict counts as absent);
    ``card``: its card (its ``data`` text tells the built-in anatomy)."""
    data = {k: str(v) for k, v in spec["data"].items()} \
        if isinstance(spec.get("data"), dict) else {}
    net = spec.get("net") if isinstance(spec.get("net"), dict) else {}
    size = spec.get("image_size", spec.get("size", net.get("image_size")))
    dims = int(net.get("spatial_dims", 2))
    latent_of = spec.get("autoencoder")
    described = " ".join([*data.values(), str((card or {}).get("data", ""))])
    simulated = any(m in described for m in SIM_MARKERS) and dims == 2 and not latent_of and size
    rows = []

    if size:
        shape = " x ".join([str(size)] * dims) + (" latent px" if latent_of else " px")
        extra = [data[k] for k in ("space", "size") if data.get(k) and data[k] != f"{size} px"]
        lo, hi = min(spec.get("slice_sizes") or [size]), max(spec.get("slice_sizes") or [size])
        if "parametrization" in spec and not latent_of:
            seen = f"{size} px" if lo == hi else f"slices of {lo}-{hi} px"
            extra.append(f"trained on {seen}; other sizes are padded to a multiple of "
                         f"{2 ** (len(net.get('channels', [0])) - 1)}, and meddiff warns below "
                         f"{max(lo // 2, 1)} or above {hi * 2} px")
        rows.append(("Image size", shape + (f" ({'; '.join(extra)})" if extra else "")))
    elif data.get("size"):
        rows.append(("Image size", data["size"]))

    complex_input = spec.get("intensity") == "complex" or spec.get("modality") == "mri"
    if net.get("in_channels") or spec.get("in_channels") or "modality" in spec:
        n = net.get("in_channels") or spec.get("in_channels") or (2 if complex_input else 1)
        channels = f"{n}"
        if complex_input:
            channels += " (real, imaginary)"
        elif spec.get("condition") == "concat":
            channels += (f" ({net.get('out_channels', 1)} diffused + "
                         f"{n - net.get('out_channels', 1)} condition)")
        rows.append(("Channels", channels))

    def described(key: str, latent_text: str, simulated_text) -> str:
        """The spec's own ``data[key]``, else what follows from the latent / simulated data."""
        if data.get(key):
            return data[key]
        if latent_of:
            return latent_text
        return simulated_text() if simulated else NOT_RECORDED

    def simulated_pixels() -> str:
        sizes = sorted(spec.get("slice_sizes") or [size])
        mm = [_mm(SIM_FOV_MM / s) for s in (sizes[-1], sizes[0])]
        text = mm[0] if mm[0] == mm[1] else f"{mm[0]}-{mm[1]}"
        return (f"{text} mm (the simulated anatomy's {SIM_FOV_MM:.0f} mm field of view at "
                f"{'/'.join(map(str, sizes))} px); resample other images to about this pixel "
                "size")

    rows.append(("Pixel size", described(
        "pixel_size", f"that of the input images of {latent_of} (see its card)",
        simulated_pixels)))
    rows.append(("Orientation", described(
        "orientation", f"that of the input images of {latent_of}", lambda: SIM_ORIENTATION)))

    if data.get("intensity"):
        value = data["intensity"]
    elif latent_of:
        value = f"scaled latents of {latent_of} (unit std)"
    elif complex_input:
        value = COMPLEX_RANGE + (" (= model space)" if "parametrization" in spec else "")
    elif spec.get("intensity") == "unit":
        value = "image space [0, 1] -> model space [-1, 1]"
    else:
        value = UNIT_RANGE
    rows.append(("Value range", value if latent_of else f"{value}; {READERS}"))
    return rows

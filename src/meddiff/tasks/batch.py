"""What every file task (denoise, reconstruct, detect, segment) does around its one-file work:
a JSON sidecar beside every output, folders of inputs, progress bars.

:func:`file_task` decorates a task's ``*_file(input, out, ..., progress, overwrite)``:

- one file in: the task runs as it is, and ``<out>.json`` (``out`` without its NIfTI ending)
  records the meddiff version, the task, the input path, the model, the method, the seed,
  every option of the call (``options``: rerunning ``*_file(input, out, **options)`` gives the
  same output) and the task's results (metrics, the self-check report, ...). It is written
  in the same all-or-nothing set as the task's files (:func:`~meddiff.data.writers.all_or_nothing`)
  and checked like them first (:func:`~meddiff.tasks.outputs.check_outputs`).
- a folder in (one that holds no DICOM file itself; such a folder is one DICOM series): every
  entry is an input (NIfTI, PNG, TIFF, NPY files, DICOM series subfolders; not searched
  recursively), ``out`` is a folder and gets one output per input under the input's name
  (``scan.nii.gz``, ``scan.png`` or ``scan/`` -> ``out/scan.nii.gz``). An input whose output
  and sidecar exist is finished and skipped (redone with ``overwrite``); an input that cannot
  be read or used (:class:`~meddiff.tasks.inputs.UnusableInput`) is skipped; each skip is a
  ``{"input", "reason"}`` entry of the result. Any other error (an option, the model) stops
  the run; files finished before it are kept. One-line InputError when nothing usable is
  left. ``progress``: a bar over the files (stderr).

:func:`network_bar`: a bar over a network's calls, for tasks whose methods have no bar of
their own (reconstruction).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from meddiff import __version__
from meddiff.data.dicom import is_dicom_file
from meddiff.data.writers import all_or_nothing, atomic_write
from meddiff.errors import InputError
from meddiff.tasks.inputs import UnusableInput
from meddiff.tasks.outputs import NIFTI_SUFFIXES, check_outputs, output_paths

SIDECAR = ".json"
FINISHED = "finished"  # the reason of a skip whose output and sidecar exist
#: arguments of a file task that are not options of its result (where, how loud, replace)
_NOT_OPTIONS = ("input", "out", "progress", "overwrite")


def file_task(task: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Decorate the one-file function of ``task`` (signature ``(input, out, ..., progress,
    overwrite)``, returning a dict with ``"outputs"``): folders and sidecars (module
    docstring). The signature is kept (``inspect.signature`` follows ``__wrapped__``)."""

    def decorate(fn: Callable[..., dict]) -> Callable[..., dict]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> dict:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            call = dict(bound.arguments)
            options = {k: v for k, v in call.items() if k not in _NOT_OPTIONS}
            job = _Job(task, fn, options, bool(call["overwrite"]), bool(call["progress"]))
            if is_input_folder(call["input"]):
                return job.folder(Path(call["input"]), Path(call["out"]))
            return job.one(call["input"], call["out"])

        return run

    return decorate


def batches(n: int, size: int | None, desc: str, progress: bool = False) -> Iterator[slice]:
    """Slices of ``n`` items, ``size`` at a time (None: all at once), with a bar over them
    (stderr) when ``progress``."""
    step = size or max(1, n)
    for start in tqdm(range(0, n, step), desc=desc, unit="batch", leave=False,
                      disable=not progress):
        yield slice(start, start + step)


def is_input_folder(path) -> bool:
    """Whether ``path`` is a folder of inputs: a folder that holds no DICOM file itself (a
    folder that does is one DICOM series)."""
    path = Path(path)
    return path.is_dir() and not any(is_dicom_file(p) for p in path.iterdir())


def _plain(value: Any) -> Any:
    """A JSON value: paths as strings, tuples as lists, numbers and strings as they are."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class _Job:
    """One call of a decorated task: its options, the one-file run and the folder loop."""

    def __init__(self, task: str, fn: Callable[..., dict], options: dict, overwrite: bool,
                 progress: bool):
        self.task, self.fn, self.options = task, fn, options
        self.overwrite, self.progress = overwrite, progress

    def one(self, input, out) -> dict:
        """The task on one file, its sidecar written with its outputs (all or nothing)."""
        out_path, sidecar = output_paths(out, SIDECAR)
        check_outputs([sidecar], [input], self.overwrite)
        with all_or_nothing():
            res = self.fn(input, out_path, progress=self.progress, overwrite=self.overwrite,
                          **self.options)
            atomic_write(sidecar, lambda fh: fh.write(self.sidecar(input, res).encode()))
        return {"input": str(input), **res, "outputs": [*res["outputs"], str(sidecar)]}

    def sidecar(self, input, res: dict) -> str:
        """The sidecar's JSON text: what made the output and what the task reported."""
        doc = {"meddiff": __version__, "task": self.task, "input": str(input),
               "model": res.get("model", res.get("models")), "method": res.get("method"),
               "seed": self.options.get("seed"), "options": self.options,
               "results": {k: v for k, v in res.items() if k not in ("outputs", "model",
                                                                     "models", "method")},
               "outputs": res["outputs"]}
        return json.dumps(_plain(doc), indent=2) + "\n"

    def folder(self, folder: Path, out: Path) -> dict:
        """Every input of ``folder`` into ``out/<name>.nii.gz`` (module docstring)."""
        _check_out_folder(folder, out)
        done: list[dict] = []
        skipped: list[dict] = []
        claimed: dict[str, Path] = {}  # output name -> the input that wrote it
        for path in tqdm(_entries(folder), desc=self.task, unit="file", leave=False,
                         disable=not self.progress):
            name = _stem(path)
            target = out / f"{name}.nii.gz"
            reason = self._skip(path, target, claimed.get(name))
            if reason is None:
                try:
                    done.append(self.one(str(path), target))
                except UnusableInput as err:
                    reason = str(err).removeprefix(f"{path}: ")
            if reason is None or reason.startswith(FINISHED):
                claimed[name] = path
            if reason is not None:
                skipped.append({"input": str(path), "reason": reason})
        if not claimed:
            raise InputError(f"{folder}: no usable input in the folder{_why(skipped)}")
        return {"input": str(folder), "out": str(out), "files": done, "skipped": skipped,
                "outputs": [o for r in done for o in r["outputs"]]}

    def _skip(self, path: Path, target: Path, claimed: Path | None) -> str | None:
        """Why ``path`` is not run (None: it is); ``claimed``: the input that already has
        ``target`` as its output."""
        if claimed is not None:
            return f"same output name as {claimed.name} ({target})"
        if path.is_dir() and not any(is_dicom_file(p) for p in path.iterdir()):
            return "a folder without DICOM files (folders are not searched recursively)"
        if not self.overwrite and target.exists() and output_paths(target, SIDECAR)[1].exists():
            return f"{FINISHED} ({target} and its sidecar exist; --overwrite redoes it)"
        return None


def _why(skipped: list[dict]) -> str:
    """`` (a.txt: reason; b.png: reason; ...)`` for an error line: the first three skips."""
    if not skipped:
        return ""
    why = "; ".join(f"{Path(s['input']).name}: {s['reason']}" for s in skipped[:3])
    return f" ({why}{'; ...' if len(skipped) > 3 else ''})"


def _entries(folder: Path) -> list[Path]:
    """The folder's entries that may be inputs: every non-hidden file and folder, sorted."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _stem(path: Path) -> str:
    """The output name of an input: ``scan.nii.gz`` / ``scan.png`` / ``scan/`` -> ``scan``."""
    low = path.name.lower()
    nifti = next((s for s in NIFTI_SUFFIXES if low.endswith(s)), None)
    if path.is_dir() or (nifti is None and not path.suffix):
        return path.name
    return path.name[:-len(nifti)] if nifti else path.stem


def _check_out_folder(folder: Path, out: Path) -> None:
    """``out`` is a folder name outside the input folder (the outputs would become inputs)."""
    if out.name.lower().endswith(NIFTI_SUFFIXES) or out.is_file():
        raise InputError(f"{out}: with a folder as --input, --out is a folder (one "
                         f"<name>.nii.gz per input), not a file")
    if folder.resolve() in (out.resolve(), *out.resolve().parents):
        raise InputError(f"{out}: the output folder is inside the input folder {folder}; "
                         "choose another --out")


@contextlib.contextmanager
def network_bar(net: torch.nn.Module, desc: str, enabled: bool = True) -> Iterator[None]:
    """A bar (stderr) that counts the calls of ``net`` during the block (a forward hook; the
    network's results are unchanged); nothing when not ``enabled``."""
    if not enabled:
        yield
        return
    with tqdm(desc=desc, unit=" network calls", leave=False) as bar:

        def tick(*_) -> None:  # a hook returning a value would replace the network's output
            bar.update(1)

        hook = net.register_forward_hook(tick)
        try:
            yield
        finally:
            hook.remove()

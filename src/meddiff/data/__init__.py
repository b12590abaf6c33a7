"""Data: users' files in and out, built-in data sets, intensity maps.

File I/O: :mod:`~meddiff.data.readers` (``load_image``: NIfTI, DICOM, PNG, TIFF, NPY ->
``Image``), :mod:`~meddiff.data.kspace_io` (fastMRI HDF5 ``KSpace``: ``load_kspace`` /
``save_kspace``), :mod:`~meddiff.data.writers` (``save_nifti`` / ``save_png`` / ``save_npy`` and
``atomic_write``, the package's one atomic writer), :mod:`~meddiff.data.slicing`
(``to_2d_slices``, ``as_slice``), :mod:`~meddiff.data.checks` (shared checks, one-line errors).
Image space [0, 1] <-> model space: :mod:`~meddiff.data.intensity`.
"""

"""DICOM test files written with pydicom: one CT slice per call, with the patient tags the
readers must never print."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

PATIENT = "DOE^JOHN"
PATIENT_ID = "PID-90210"
SERIES_UID = "1.2.826.0.1.3680043.8.498.100"


def write_dicom_slice(path: Path, raw: np.ndarray, position=None, instance=None, slope=2.0, intercept=-1024.0,
                      orientation=(1, 0, 0, 0, 1, 0)) -> None:
    """Write ``raw`` (rows, cols) uint16 as a CT slice of the test series: 0.5 x 0.75 mm pixels,
    2.5 mm thick, ``slope`` / ``intercept`` rescale, position / instance tags when given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = f"{SERIES_UID}.{sum(path.name.encode())}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT, PATIENT_ID, "19700101"
    ds.Modality, ds.SeriesInstanceUID = "CT", SERIES_UID
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = list(position)
        ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [0.5, 0.75]
    ds.SliceThickness = 2.5
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = raw.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)

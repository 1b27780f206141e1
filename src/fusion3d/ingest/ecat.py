"""Read raw PET stored as ECAT 7 (``.v``, CTI/Siemens HR+) with ``nibabel.ecat``.

IDA serves some raw FDG as ECAT 7. One file holds a main header (512 bytes), a matrix list
(one entry per frame) and, per frame, an image subheader followed by the voxels.

Values
    ``stored value x scale_factor (the frame's subheader) x ecat_calibration_factor (the main
    header)``, as nibabel's ``EcatSubHeader.data_from_fileobj`` computes them, and as
    XMedCon's "calibrated" reading does; a calibration factor <= 0 (not set) counts as 1.

Orientation
    ECAT 7 does not store a patient-to-scanner matrix. For a head-first supine scan its voxels
    run from the patient's right to left (x), anterior to posterior (y) and superior to inferior
    (planes): the convention of SPM's and dcm2niix's ECAT readers (dcm2niix writes the affine
    ``diag(-dx, -dy, -dz)``), of XMedCon ("supine-headfirst-transverse") and of the Turku PET
    Centre tools (which flip x, y and z to write Analyze). nibabel reverses all three axes for
    head-first ``patient_orientation`` codes and gives ``EcatImage.affine = diag(dx, dy, dz)``
    (voxel sizes from cm to mm) with the volume centre at the subheader's ``(x, y, z)_offset``:
    with the reversed data that affine is RAS+. For code 8 (unknown orientation, e.g.
    nibabel's own ``tinypet.v``) nibabel does not reverse the data, so its affine would swap
    left and right: this reader reverses all three axes for code 8 too, i.e. reads it as head-
    first supine like dcm2niix and SPM. Prone, feet-first and decubitus scans are refused (a
    :class:`~fusion3d.ingest.convert.ConversionError` naming the orientation). The origin
    (the offsets, taken as nibabel reads them) does not matter downstream: the PET -> T1
    registration starts by matching the centres of mass; the orientation does.

Frames
    Every frame must have the same grid (shape and affine); they are averaged into one static
    volume by :func:`fusion3d.ingest.convert.average_frames`, the function that also averages
    dynamic DICOM series and NIfTI-per-frame raw PET.
"""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
from nibabel import ecat
from nibabel.fileholders import FileHolder

from fusion3d.ingest.frames import ConversionError, stack_frames

#: ECAT 7 ``file_type`` codes that hold reconstructed images (the others are sinograms,
#: normalisations, attenuation maps or polar maps).
IMAGE_FILE_TYPES = {2: "Image16", 6: "Volume8", 7: "Volume16", 10: "Image8"}
#: ``data_type`` codes read (big-endian byte, IEEE float, Sun int16/int32); the VAX codes
#: 2-4 are refused.
DATA_TYPES = {1: "byte", 5: "IEEE float32", 6: "Sun int16", 7: "Sun int32"}
#: ``patient_orientation`` codes read as head-first supine: 3 (head-first supine), 8 (unknown).
READ_AS_HEAD_FIRST_SUPINE = (3, 8)


def _label(code: int, table: dict[int, str]) -> str:
    """``"<name> (code <n>)"`` for a header code, ``"unknown (code <n>)"`` when not in ``table``."""
    return f"{table.get(code, 'unknown')} (code {code})"


def _check_header(path: Path, header) -> tuple[int, float]:
    """Check an ECAT main header; return the number of frames and the calibration factor.

    Raises
    ------
    ConversionError
        For a file type that is not an image, no frames, or an orientation not read.
    """
    file_type = int(header["file_type"])
    if file_type not in IMAGE_FILE_TYPES:
        kind = _label(file_type, {k: v.split("_", 1)[-1] for k, v in ecat.file_type_codes.items()})
        raise ConversionError(f"ECAT {path.name}: file type {kind} is not an image")
    orientation = int(header["patient_orientation"])
    if orientation not in READ_AS_HEAD_FIRST_SUPINE:
        names = {k: v.split("_", 1)[-1] for k, v in ecat.patient_orient_codes.items()}
        raise ConversionError(
            f"ECAT {path.name}: patient orientation {_label(orientation, names)} is not read "
            "(only head-first supine, code 3, or unknown, code 8)"
        )
    n_frames = int(header["num_frames"])
    if n_frames < 1:
        raise ConversionError(f"ECAT {path.name}: no frames (num_frames {n_frames})")
    calibration = float(header["ecat_calibration_factor"])
    if not np.isfinite(calibration) or calibration <= 0:
        calibration = 1.0
    return n_frames, calibration


def _read_frame(path: Path, subheaders, index: int, calibration: float):
    """One frame of an open ECAT file: ``(data, affine, subheader)``, scaled and oriented."""
    sub = subheaders.subheaders[index]
    code = int(sub["data_type"])
    if code not in DATA_TYPES:
        raise ConversionError(
            f"ECAT {path.name}: frame {index + 1} has data type {code} (not read; "
            f"read: {', '.join(DATA_TYPES.values())})"
        )
    raw = subheaders.raw_data_from_fileobj(index, orientation="neurological")
    data = np.asarray(raw, dtype=np.float64) * float(sub["scale_factor"]) * calibration
    return data, np.asarray(subheaders.get_frame_affine(index), float), sub


def read_ecat_file(path: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], dict]:
    """Read every frame of one ECAT 7 file.

    Returns
    -------
    (frames, info)
        ``frames``: ``(label, data, affine)`` per frame in stored order (data float64, scaled,
        oriented as described in the module docstring). ``info``: header facts for the sidecar.

    Raises
    ------
    ConversionError
        For a zero-byte, non-ECAT, truncated or unreadable file, and the refusals of
        :func:`_check_header` and :func:`_read_frame`.
    """
    if path.stat().st_size == 0:
        raise ConversionError(f"zero-byte file {path.name}")
    with open(path, "rb") as handle:
        magic = handle.read(14)
        if not magic.startswith(b"MATRIX"):
            raise ConversionError(f"{path.name} is not an ECAT 7 file (no MATRIX magic number)")
        handle.seek(0)
        holder = FileHolder(filename=str(path), fileobj=handle)
        try:
            img = ecat.EcatImage.from_file_map({"header": holder, "image": holder})
            header = img.header
            n_frames, calibration = _check_header(path, header)
            subheaders = img.get_subheaders()
            if len(subheaders.subheaders) != n_frames:
                raise ConversionError(
                    f"ECAT {path.name}: {len(subheaders.subheaders)} frame(s) in the matrix "
                    f"list, {n_frames} in the main header"
                )
            read = [_read_frame(path, subheaders, k, calibration) for k in range(n_frames)]
        except ConversionError:
            raise
        except Exception as exc:  # nibabel raises many types for broken files
            raise ConversionError(f"corrupt ECAT {path.name} ({exc})") from exc
    frames = [(f"{path.name} frame {k + 1}", d, a) for k, (d, a, _) in enumerate(read)]
    info = {
        "orientation": int(header["patient_orientation"]),
        "calibration": calibration,
        "units": header["data_units"].item().split(b"\0")[0].decode("latin-1").strip(),
        "scale_factors": [float(s["scale_factor"]) for _, _, s in read],
        "durations_s": [int(s["frame_duration"]) / 1000.0 for _, _, s in read],
        "starts_s": [int(s["frame_start_time"]) / 1000.0 for _, _, s in read],
    }
    return frames, info


def read_ecat_image(files: list[Path]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Read the ECAT 7 file(s) of one image into 4D data (frames last), its affine, a sidecar.

    Several files of one image (one per frame) are read in name order; all frames must share
    one grid. The caller averages the frames (:func:`fusion3d.ingest.convert.convert_image`).
    """
    frames: list[tuple[str, np.ndarray, np.ndarray]] = []
    infos = []
    for path in files:
        more, info = read_ecat_file(Path(path))
        frames.extend(more)
        infos.append(info)
    data, affine = stack_frames(frames)
    sidecar = {
        "Modality": "PT",
        "ConversionSoftware": f"nibabel.ecat {nibabel.__version__}",
        "ECATPatientOrientation": infos[0]["orientation"],
        "ECATCalibrationFactor": infos[0]["calibration"],
        "ECATScaleFactors": [f for i in infos for f in i["scale_factors"]],
        "FrameDuration": [d for i in infos for d in i["durations_s"]],
        "FrameTimesStart": [t for i in infos for t in i["starts_s"]],
    }
    if infos[0]["units"]:
        sidecar["Units"] = infos[0]["units"]
    return data, affine, sidecar

"""Find the files of every image in a download with one directory walk.

A file belongs to the image named at the end of its file name (``*_I<ImageID>.<ext>``), whatever
the rest of the name says: the older ``ADNI_<PTID>_PT_...`` and the newer (IDA since October
2024) ``ADNI_<PTID>_PET_...`` names, ``br_raw`` or ``Br``. A file whose name carries no image ID
(some exports name DICOM files by instance number: ``IM-0001-0001.dcm``, ``1.dcm``) belongs to
its nearest ``I<ImageID>`` folder (``ADNI/<PTID>/<Description>/<date>/I<ImageID>/...``); the
name wins when both say something. A file with neither (e.g. under an ``S<series>`` folder) is
counted, not used. Symbolic links are followed only while their real path stays inside the
download; a link that leaves it is recorded, never read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_FILE_RE = re.compile(r"_I(\d+)\.([A-Za-z0-9][A-Za-z0-9.]*)$")
_LEAF_RE = re.compile(r"^I(\d+)$")
_IGNORED_EXT = {"xml", "json", "txt", "csv"}
#: File names never taken for image files when found through their folder.
_IGNORED_NAMES = {"dicomdir", "thumbs.db"}


@dataclass
class DownloadIndex:
    """What one walk of ``<root>/ADNI`` found.

    Attributes
    ----------
    root
        The download folder (real path).
    files
        ``image_id -> {ptid folder -> [file paths]}``.
    outside
        ``image_id -> {ptid folder -> [paths of links leaving root]}`` (never read).
    skipped_dirs
        ``ptid folder -> [directory links leaving root]`` (not walked).
    unassigned
        ``ptid folder -> number of files`` with no image ID in their name and no ``I<id>``
        folder above them (not used).
    n_files
        Number of image files found (by name or by folder).
    n_by_folder
        How many of them were assigned by their ``I<id>`` folder.
    """

    root: Path
    files: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    outside: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    skipped_dirs: dict[str, list[Path]] = field(default_factory=dict)
    unassigned: dict[str, int] = field(default_factory=dict)
    n_files: int = 0
    n_by_folder: int = 0


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _extension(name: str) -> str:
    """Lower-case text after the last dot of ``name`` ("" when there is none)."""
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def image_id_of(name: str, folder_id: str | None) -> tuple[str | None, bool]:
    """The image ID a file belongs to, and whether it came from the folder.

    ``name`` is the file name, ``folder_id`` the ID of the nearest ``I<id>`` folder above it
    (or None). Metadata files (``.xml``, ``.json``, ``.txt``, ``.csv``), hidden files and
    ``DICOMDIR`` belong to no image.
    """
    match = _FILE_RE.search(name)
    if match:
        if match.group(2).lower() in _IGNORED_EXT:
            return None, False
        return f"I{int(match.group(1))}", False
    if (
        folder_id is None
        or name.startswith(".")
        or name.lower() in _IGNORED_NAMES
        or _extension(name) in _IGNORED_EXT
    ):
        return None, False
    return folder_id, True


def _folder_id(name: str, inherited: str | None) -> str | None:
    """``I<id>`` of a folder named ``I<digits>``, else the ID inherited from above."""
    match = _LEAF_RE.match(name)
    return f"I{int(match.group(1))}" if match else inherited


def _add(table: dict, image_id: str, ptid: str, path: str) -> None:
    table.setdefault(image_id, {}).setdefault(ptid, []).append(Path(path))


def _visit(index: DownloadIndex, ptid: str, entry: os.DirEntry, folder_id, root: str, stack):
    """Record one directory entry of a subject's tree (push folders on ``stack``)."""
    if entry.is_symlink() and not _inside(os.path.realpath(entry.path), root):
        match = _FILE_RE.search(entry.name)
        image_id = f"I{int(match.group(1))}" if match else None
        if image_id is None and not entry.is_dir():
            image_id = image_id_of(entry.name, folder_id)[0]
        if image_id is not None:
            _add(index.outside, image_id, ptid, entry.path)
        else:
            index.skipped_dirs.setdefault(ptid, []).append(Path(entry.path))
        return
    if entry.is_dir():
        stack.append((entry.path, _folder_id(entry.name, folder_id)))
        return
    image_id, by_folder = image_id_of(entry.name, folder_id)
    if image_id is None:
        if not _FILE_RE.search(entry.name) and _extension(entry.name) not in _IGNORED_EXT:
            index.unassigned[ptid] = index.unassigned.get(ptid, 0) + 1
        return
    index.n_files += 1
    index.n_by_folder += int(by_folder)
    _add(index.files, image_id, ptid, entry.path)


def scan_download(download_dir: str | os.PathLike) -> DownloadIndex:
    """Walk ``download_dir/ADNI/<PTID>/...`` once and map image IDs to their files.

    Raises
    ------
    FileNotFoundError
        If ``download_dir`` or its ``ADNI`` folder does not exist.
    """
    download_dir = Path(download_dir)
    if not download_dir.is_dir():
        raise FileNotFoundError(f"{download_dir}: download folder not found")
    adni = download_dir / "ADNI"
    if not adni.is_dir():
        raise FileNotFoundError(f"{adni}: no ADNI folder in the download")
    root = os.path.realpath(download_dir)
    index = DownloadIndex(root=Path(root))
    seen_dirs: set[str] = set()
    with os.scandir(adni) as top:
        subjects = [(e.name, e.path, e.is_symlink()) for e in top if e.is_dir()]
    for ptid, path, is_link in sorted(subjects):
        if is_link and not _inside(os.path.realpath(path), root):
            index.skipped_dirs.setdefault(ptid, []).append(Path(path))
            continue
        stack: list[tuple[str, str | None]] = [(path, None)]
        while stack:
            current, folder_id = stack.pop()
            real_dir = os.path.realpath(current)
            if real_dir in seen_dirs:  # a link loop or two links to one folder
                continue
            seen_dirs.add(real_dir)
            try:
                entries = list(os.scandir(current))
            except OSError:
                continue
            for entry in entries:
                _visit(index, ptid, entry, folder_id, root, stack)
    for per_subject in index.files.values():
        for files in per_subject.values():
            files.sort(key=lambda p: p.name)
    return index


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` starts like a DICOM Part 10 file (``DICM`` after a 128-byte preamble).

    Used only for files without a known extension (some exports name DICOM files ``IM000001``
    or by UID); an unreadable file is not DICOM.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


_FORMAT_NAMES = {"dicom": "DICOM", "nifti": "NIfTI", "ecat": "ECAT"}


def _file_kind(path: Path) -> str:
    """``"dicom"``, ``"nifti"``, ``"ecat"`` or the name of an unsupported format of one file."""
    name = path.name.lower()
    if name.endswith(".dcm"):
        return "dicom"
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".v"):
        return "ecat"
    if name.endswith(".i.hdr") or name.endswith(".i"):
        return "Interfile (.i.hdr/.i)"
    if is_dicom_file(path):
        return "dicom"
    ext = _extension(path.name)
    return f".{ext}" if ext else "file without extension"


def file_format(files: list[Path]) -> tuple[str | None, str]:
    """Classify the files of one image.

    DICOM (``.dcm``, or any file with the DICOM ``DICM`` signature), NIfTI (``.nii``,
    ``.nii.gz``) and ECAT 7 (``.v``) are read.

    Returns
    -------
    (format, reason)
        ``("dicom", "")``, ``("nifti", "")``, ``("ecat", "")``, or ``(None, reason)`` for an
        unsupported (Interfile ``.i.hdr``/``.i``, anything else) or mixed format.
    """
    kinds = {_file_kind(path) for path in files}
    if len(kinds) == 1 and next(iter(kinds)) in _FORMAT_NAMES:
        return kinds.pop(), ""
    unsupported = sorted(k for k in kinds if k not in _FORMAT_NAMES)
    if unsupported:
        return None, f"unsupported format {', '.join(unsupported)}"
    names = " and ".join(name for kind, name in _FORMAT_NAMES.items() if kind in kinds)
    return None, f"mixed {names} files for one image"


def locate_image(
    index: DownloadIndex, image_id: str, ptid: str
) -> tuple[list[Path], str | None, str]:
    """The files of ``image_id`` under ``ADNI/<ptid>/``.

    Returns
    -------
    (files, format, reason)
        ``format`` is ``"dicom"``, ``"nifti"`` or ``"ecat"`` and ``reason`` empty when usable;
        otherwise ``format`` is ``None`` and ``reason`` says why (not found, link leaving the
        download, only under another subject's folder, unsupported format).
    """
    outside = index.outside.get(image_id, {}).get(ptid, [])
    if outside:
        return [], None, f"file {outside[0].name} resolves outside download_dir (not read)"
    files = index.files.get(image_id, {}).get(ptid, [])
    if not files:
        others = sorted(index.files.get(image_id, {}))
        if others:
            return [], None, f"file found only under another subject's folder ({others[0]})"
        reason = "file not found under download_dir"
        skipped = index.skipped_dirs.get(ptid)
        if skipped:
            reason += f" (skipped {len(skipped)} folder link(s) leaving download_dir)"
        unassigned = index.unassigned.get(ptid)
        if unassigned:
            reason += (
                f" ({unassigned} file(s) of this subject have no image ID in their name and no "
                "I<id> folder above them)"
            )
        return [], None, reason
    fmt, why = file_format(files)
    return files, fmt, why

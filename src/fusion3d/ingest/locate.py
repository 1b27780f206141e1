"""Find the files of every image in a download with one directory walk.

Files are matched by name (``*_I<ImageID>.<ext>``), never by folder: the IDA leaf folder is
``I<image>`` or ``S<series>`` depending on the export. Symbolic links are followed only while
their real path stays inside the download; a link that leaves it is recorded, never read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_FILE_RE = re.compile(r"_I(\d+)\.([A-Za-z0-9][A-Za-z0-9.]*)$")
_IGNORED_EXT = {"xml", "json", "txt", "csv"}


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
    n_files
        Number of files seen.
    """

    root: Path
    files: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    outside: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    skipped_dirs: dict[str, list[Path]] = field(default_factory=dict)
    n_files: int = 0


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


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
        stack = [path]
        while stack:
            current = stack.pop()
            real_dir = os.path.realpath(current)
            if real_dir in seen_dirs:  # a link loop or two links to one folder
                continue
            seen_dirs.add(real_dir)
            try:
                entries = list(os.scandir(current))
            except OSError:
                continue
            for entry in entries:
                link = entry.is_symlink()
                if link and not _inside(os.path.realpath(entry.path), root):
                    match = _FILE_RE.search(entry.name)
                    if match:
                        image_id = f"I{int(match.group(1))}"
                        index.outside.setdefault(image_id, {}).setdefault(ptid, []).append(
                            Path(entry.path)
                        )
                    else:
                        index.skipped_dirs.setdefault(ptid, []).append(Path(entry.path))
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                    continue
                match = _FILE_RE.search(entry.name)
                if not match or match.group(2).lower() in _IGNORED_EXT:
                    continue
                index.n_files += 1
                image_id = f"I{int(match.group(1))}"
                index.files.setdefault(image_id, {}).setdefault(ptid, []).append(Path(entry.path))
    for per_subject in index.files.values():
        for files in per_subject.values():
            files.sort(key=lambda p: p.name)
    return index


def file_format(files: list[Path]) -> tuple[str | None, str]:
    """Classify the files of one image.

    Returns
    -------
    (format, reason)
        ``("dicom", "")``, ``("nifti", "")``, or ``(None, reason)`` for an unsupported or mixed
        format (ECAT ``.v``, Interfile ``.i.hdr``/``.i``, anything else).
    """
    kinds = set()
    for path in files:
        name = path.name.lower()
        if name.endswith(".dcm"):
            kinds.add("dicom")
        elif name.endswith(".nii") or name.endswith(".nii.gz"):
            kinds.add("nifti")
        elif name.endswith(".v"):
            kinds.add("ECAT (.v)")
        elif name.endswith(".i.hdr") or name.endswith(".i"):
            kinds.add("Interfile (.i.hdr/.i)")
        else:
            kinds.add("." + name.rsplit(".", 1)[-1])
    if kinds == {"dicom"} or kinds == {"nifti"}:
        return kinds.pop(), ""
    unsupported = sorted(k for k in kinds if k not in ("dicom", "nifti"))
    if unsupported:
        return None, f"unsupported format {', '.join(unsupported)}"
    return None, "mixed DICOM and NIfTI files for one image"


def locate_image(
    index: DownloadIndex, image_id: str, ptid: str
) -> tuple[list[Path], str | None, str]:
    """The files of ``image_id`` under ``ADNI/<ptid>/``.

    Returns
    -------
    (files, format, reason)
        ``format`` is ``"dicom"`` or ``"nifti"`` and ``reason`` empty when usable; otherwise
        ``format`` is ``None`` and ``reason`` says why (not found, link leaving the download,
        only under another subject's folder, unsupported format).
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
        return [], None, reason
    fmt, why = file_format(files)
    return files, fmt, why

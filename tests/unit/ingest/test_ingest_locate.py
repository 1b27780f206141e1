"""Tests of fusion3d.ingest.locate: finding image files by name, links, formats."""

import os
from pathlib import Path

import fixtures_adni as fx  # noqa: E402
import pytest

from fusion3d.ingest.locate import file_format, locate_image, scan_download  # noqa: E402

PTID = "016_S_4353"


def test_files_found_by_name_in_either_leaf_folder(tmp_path):
    fx.write_nifti_image(tmp_path, ptid=PTID, description=fx.T1_DESC, image_id=297620)
    dcm = fx.write_dicom_series(tmp_path, ptid=PTID, description=fx.FDG_DESC, image_id=282615)
    index = scan_download(tmp_path)
    files, fmt, why = locate_image(index, "I282615", PTID)
    assert fmt == "dicom" and why == "" and sorted(files) == sorted(dcm)
    files, fmt, _ = locate_image(index, "I297620", PTID)
    assert fmt == "nifti" and len(files) == 1 and files[0].parent.name.startswith("S")
    assert index.n_files == len(dcm) + 1


def test_not_found_and_other_subject(tmp_path):
    fx.write_nifti_image(tmp_path, ptid="002_S_0295", description="MPRAGE", image_id=5)
    index = scan_download(tmp_path)
    assert locate_image(index, "I6", PTID)[2] == "file not found under download_dir"
    assert "another subject's folder (002_S_0295)" in locate_image(index, "I5", PTID)[2]


def test_missing_download_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ADNI folder"):
        scan_download(tmp_path)


def test_link_leaving_download_is_excluded_not_read(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.nii"
    secret.write_bytes(b"x")
    download = tmp_path / "download"
    folder = fx.image_folder(download, PTID, "MPRAGE", "2012-01-01", "S1")
    os.symlink(secret, folder / fx.file_name(PTID, "MRI", "MPRAGE", 1, 77, "nii", None))
    os.symlink(outside, download / "ADNI" / PTID / "linked_dir")
    index = scan_download(download)
    files, fmt, why = locate_image(index, "I77", PTID)
    assert files == [] and fmt is None and "resolves outside download_dir" in why


def test_link_inside_download_is_followed(tmp_path):
    paths = fx.write_nifti_image(tmp_path, ptid=PTID, description="MPRAGE", image_id=8)
    folder = fx.image_folder(tmp_path, PTID, "MPRAGE", "2013-01-01", "S9")
    os.symlink(paths[0], folder / fx.file_name(PTID, "MRI", "MPRAGE", 9, 9, "nii", None))
    index = scan_download(tmp_path)
    assert locate_image(index, "I9", PTID)[1] == "nifti"


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a_I1.i.hdr", "a_I1.i"], "unsupported format Interfile (.i.hdr/.i)"),
        (["a_I1.mnc"], "unsupported format .mnc"),
        (["a_I1.dcm", "b_I1.nii"], "mixed DICOM and NIfTI files for one image"),
        (["a_I1.v", "b_I1.nii.gz"], "mixed NIfTI and ECAT files for one image"),
    ],
)
def test_unsupported_formats(names, expected):
    assert file_format([Path(n) for n in names]) == (None, expected)


@pytest.mark.parametrize("token", ["PT", "PET"])
def test_ecat_found_under_old_and_new_ida_names(tmp_path, token):
    # new IDA: ADNI_109_S_1343_PET_FDG_Brain_..._br_raw_<stamp>_S41947_I78559.v
    files = fx.write_ecat_image(tmp_path, ptid=PTID, image_id=78559, pet_token=token)
    assert f"_{token}_" in files[0].name and "_br_raw_" in files[0].name
    assert locate_image(scan_download(tmp_path), "I78559", PTID) == (files, "ecat", "")


@pytest.mark.parametrize(
    "names",
    [["IM-0001-0001.dcm", "IM-0001-0002.dcm"], ["1.dcm", "2.dcm", "3.dcm"], ["IM000001"]],
    ids=["IM-numbered", "instance-numbered", "no-extension"],
)
def test_files_without_image_id_found_by_their_i_folder(tmp_path, names):
    series = fx.write_dicom_series(
        tmp_path, ptid=PTID, description=fx.FDG_DESC, image_id=282615, shape=(4, 4, len(names))
    )
    renamed = [path.rename(path.with_name(name)) for path, name in zip(series, names, strict=True)]
    (renamed[0].parent / "metadata.xml").write_text("<x/>")  # metadata is not an image file
    (renamed[0].parent / "DICOMDIR").write_bytes(renamed[0].read_bytes())
    index = scan_download(tmp_path)
    files, fmt, why = locate_image(index, "I282615", PTID)
    assert (fmt, why) == ("dicom", "") and sorted(files) == sorted(renamed)
    assert index.n_by_folder == len(names) == index.n_files


def test_name_wins_over_folder_and_unnamed_files_under_s_folders_are_reported(tmp_path):
    # a file named for I5 inside the folder of I4 belongs to I5
    folder = fx.image_folder(tmp_path, PTID, "MPRAGE", "2012-01-01", "I4")
    named = folder / fx.file_name(PTID, "MRI", "MPRAGE", 9, 5, "nii", None)
    named.write_bytes(b"x")
    unnamed = fx.image_folder(tmp_path, PTID, "MPRAGE", "2013-01-01", "S77") / "1.dcm"
    unnamed.write_bytes(b"x")
    index = scan_download(tmp_path)
    assert locate_image(index, "I5", PTID)[0] == [named]
    why = locate_image(index, "I4", PTID)[2]
    assert why.startswith("file not found under download_dir")
    assert "1 file(s) of this subject have no image ID in their name and no I<id> folder" in why


def test_unknown_extension_sniffed_for_dicom_signature(tmp_path):
    good = tmp_path / "a_I1.ima"
    good.write_bytes(bytes(128) + b"DICM" + bytes(10))
    other = tmp_path / "b_I2.ima"
    other.write_bytes(bytes(200))
    assert file_format([good]) == ("dicom", "")
    assert file_format([other]) == (None, "unsupported format .ima")

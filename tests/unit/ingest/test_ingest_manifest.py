"""Tests of fusion3d.ingest.manifest: the quirks of real IDA collection CSVs."""

import fixtures_adni as fx  # noqa: E402
import pandas as pd
import pytest

from fusion3d.ingest import REQUIRED_COLUMNS, ManifestError, read_manifests  # noqa: E402

T1, FDG = fx.T1_DESC, fx.FDG_DESC


def _rows():
    return [
        fx.manifest_row(101, "002_S_0295", T1, "2012-01-20"),
        fx.manifest_row(102, "002_S_0295", FDG, "2012-01-31", modality="PET"),
    ]


def test_full_header_normalises_ids_and_dates(tmp_path):
    frame = read_manifests(fx.write_manifest(tmp_path / "a.csv", _rows()))
    assert list(frame["Image Data ID"]) == ["I101", "I102"]
    assert frame["Acq Date"].iloc[0] == pd.Timestamp("2012-01-20")
    assert (frame["problem"] == "").all()
    assert set(REQUIRED_COLUMNS) <= set(frame.columns)


def test_bare_ids_are_prefixed(tmp_path):
    rows = _rows()
    for r in rows:
        r["Image Data ID"] = r["Image Data ID"][1:]
    frame = read_manifests(fx.write_manifest(tmp_path / "a.csv", rows))
    assert list(frame["Image Data ID"]) == ["I101", "I102"]


def test_bom_and_blank_lines(tmp_path):
    path = fx.write_manifest(tmp_path / "a.csv", _rows(), bom=True, blank_lines=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    frame = read_manifests(path)
    assert len(frame) == 2 and frame.columns[0] == "Image Data ID"


def test_quoted_commas_kept_in_description(tmp_path):
    frame = read_manifests(fx.write_manifest(tmp_path / "a.csv", _rows()))
    assert frame["Description"].iloc[1] == FDG


def test_missing_optional_and_extra_columns(tmp_path):
    header = ("Extra", *REQUIRED_COLUMNS)
    rows = [{**r, "Extra": "x"} for r in _rows()]
    frame = read_manifests(fx.write_manifest(tmp_path / "a.csv", rows, header=header))
    assert "Extra" in frame.columns and (frame["Group"] == "").all()


def test_missing_required_column_names_file_and_column(tmp_path):
    header = [c for c in fx.FULL_HEADER if c != "Acq Date"]
    path = fx.write_manifest(tmp_path / "bad.csv", _rows(), header=header)
    with pytest.raises(ManifestError, match=r"bad\.csv.*'Acq Date'"):
        read_manifests([path])


def test_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="nope.csv.*not found"):
        read_manifests(tmp_path / "nope.csv")


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match="empty.csv.*empty"):
        read_manifests(empty)
    header_only = fx.write_manifest(tmp_path / "h.csv", [])
    with pytest.raises(ManifestError, match="h.csv.*no rows"):
        read_manifests(header_only)


def test_several_manifests_and_identical_duplicates_merged(tmp_path):
    a = fx.write_manifest(tmp_path / "a.csv", _rows())
    b = fx.write_manifest(tmp_path / "b.csv", _rows()[:1])
    frame = read_manifests([a, b])
    assert list(frame["Image Data ID"]) == ["I101", "I102"]
    assert (frame["problem"] == "").all()


def test_conflicting_duplicates_flagged(tmp_path):
    a = fx.write_manifest(tmp_path / "a.csv", _rows())
    other = fx.manifest_row(101, "002_S_0295", "MPRAGE", "2012-01-20")
    b = fx.write_manifest(tmp_path / "b.csv", [other])
    frame = read_manifests([a, b]).set_index("Image Data ID")
    assert frame.loc["I101", "problem"].startswith("duplicate image ID with conflicting rows")


def test_bad_row_values_flagged_not_raised(tmp_path):
    rows = _rows()
    rows[0]["Acq Date"] = "someday"
    rows[1]["Subject"] = "nobody"
    frame = read_manifests(fx.write_manifest(tmp_path / "a.csv", rows))
    assert frame["problem"].tolist() == [
        "unparseable Acq Date",
        "malformed subject ID 'nobody' (expected SSS_S_RRRR)",
    ]

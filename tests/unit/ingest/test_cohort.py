"""Tests of fusion3d.ingest.cohort: cohort lists, IDA search batches, completeness of a download."""

from pathlib import Path

import fixtures_adni as fx  # noqa: E402
import pytest

from fusion3d.ingest import read_manifests  # noqa: E402
from fusion3d.ingest.cohort import (  # noqa: E402
    IncompleteCohortError,
    check_completeness,
    ida_search_batches,
    read_cohort,
    write_search_batches,
)

P = "002_S_0295"


def test_read_cohort_one_line_and_one_per_line(tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("I321357,I305477, 1598350\n")
    per_line = tmp_path / "lines.csv"
    per_line.write_text('Image Data ID\n"321357"\nI305477\n\ni1598350\nI305477\n')
    assert read_cohort(one) == read_cohort(per_line) == ["I321357", "I305477", "I1598350"]


def test_read_cohort_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_cohort(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("I1,I2\nI3,abc\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 2: .*'abc'"):
        read_cohort(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no image IDs"):
        read_cohort(empty)


def test_read_shipped_paper_cohort():
    path = Path(__file__).resolve().parents[3] / "config/cohorts/dc2fusion_image_ids.csv"
    if not path.exists():
        pytest.skip("paper cohort list not shipped")
    ids = read_cohort(path)
    assert len(ids) > 1000 and all(i.startswith("I") for i in ids)


def test_search_batches(tmp_path):
    ids = [str(i) for i in range(1, 451)]
    batches = ida_search_batches(ids, batch_size=200)
    assert [len(b.split(",")) for b in batches] == [200, 200, 50]
    assert batches[0].startswith("I1,I2,") and batches[2].endswith("I450")
    out = write_search_batches(ids, tmp_path / "s.txt", batch_size=200)
    assert out.read_text().splitlines() == batches
    with pytest.raises(ValueError, match="batch_size"):
        ida_search_batches(ids, batch_size=0)
    with pytest.raises(ValueError, match="'x1'"):
        ida_search_batches(["x1"])


def _setup(tmp_path):
    dl = tmp_path / "dl"
    rows = fx.add_subject(dl, P, t1_id=11, pet_id=12)
    rows.append(fx.manifest_row(13, P, "MPRAGE", "2012-01-20"))  # listed, never downloaded
    fx.write_nifti_image(dl, ptid=P, description="MPRAGE Repeat", image_id=14)
    rows.append(fx.manifest_row(14, P, "MPRAGE Repeat", "2012-01-20"))
    manifest = read_manifests(fx.write_manifest(dl / "c.csv", rows))
    return dl, manifest


def test_complete_download(tmp_path):
    dl, manifest = _setup(tmp_path)
    missing, summary = check_completeness(["I11", "12"], manifest, dl)
    assert missing.empty
    assert summary["n_expected"] == summary["n_found"] == 2
    assert summary["n_not_in_cohort"] == 2


def test_missing_file_and_absent_id(tmp_path):
    dl, manifest = _setup(tmp_path)
    ids = ["I11", "I13", "I77"]
    missing, summary = check_completeness(ids, manifest, dl, allow_incomplete=True)
    assert missing.set_index("image_id")["reason"].to_dict() == {
        "I13": "in CSV but no file",
        "I77": "not in any collection CSV",
    }
    assert summary["missing_by_reason"] == {"not in any collection CSV": 1, "in CSV but no file": 1}
    with pytest.raises(
        IncompleteCohortError, match="3 images expected, 1 found, 2 missing"
    ) as info:
        check_completeness(ids, manifest, dl)
    assert len(info.value.missing) == 2


def test_unreadable_file(tmp_path):
    dl, manifest = _setup(tmp_path)
    next(dl.rglob("*_I14.nii")).write_bytes(b"")
    missing, _ = check_completeness(["I14"], manifest, dl, allow_incomplete=True)
    assert missing["reason"].tolist() == ["file unreadable"]
    assert "zero-byte" in missing["detail"][0]


def test_bare_and_prefixed_ids_and_cohort_file(tmp_path):
    dl, manifest = _setup(tmp_path)
    path = tmp_path / "ids.csv"
    path.write_text("11,I12,14\n")
    missing, summary = check_completeness(path, manifest, dl)
    assert missing.empty and summary["n_found"] == 3

"""Diagnosis, sex, age and visit codes from ADNIMERGE (else from the collection CSV).

Groups are mapped to the three study classes: CN (CN, SMC), MCI (EMCI, LMCI, MCI) and
AD (AD, Dementia); the raw label is kept as ``group_raw``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

GROUP_MAP = {
    "CN": "CN",
    "SMC": "CN",
    "EMCI": "MCI",
    "LMCI": "MCI",
    "MCI": "MCI",
    "AD": "AD",
    "DEMENTIA": "AD",
}
ADNIMERGE_REQUIRED = ("PTID", "VISCODE", "EXAMDATE")
_ADNIMERGE_USED = ADNIMERGE_REQUIRED + ("RID", "DX", "DX_bl", "AGE", "PTGENDER", "IMAGEUID")
_VISCODE_RE = re.compile(r"^m(\d+)$")


def map_group(raw: object) -> str | None:
    """``"EMCI"`` -> ``"MCI"``, ``"Dementia"`` -> ``"AD"``...; ``None`` when not a known group."""
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        return None
    return GROUP_MAP.get(str(raw).strip().upper())


def read_adnimerge(path: str | os.PathLike) -> pd.DataFrame:
    """Read the columns of ADNIMERGE.csv that ingest uses (``EXAMDATE`` parsed).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file and column when PTID, VISCODE or EXAMDATE is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ADNIMERGE table not found")
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            usecols=lambda c: c.strip() in _ADNIMERGE_USED,
            low_memory=False,
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: not a readable ADNIMERGE CSV ({exc})") from exc
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in ADNIMERGE_REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: ADNIMERGE lacks column(s) {', '.join(missing)}")
    for col in _ADNIMERGE_USED:
        if col not in frame.columns:
            frame[col] = ""
        frame[col] = frame[col].astype(str).str.strip()
    frame["EXAMDATE"] = pd.to_datetime(frame["EXAMDATE"], errors="coerce", format="mixed")
    frame["IMAGEUID"] = frame["IMAGEUID"].str.replace(r"\.0$", "", regex=True)
    return frame


def index_adnimerge(frame: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """Rows of ADNIMERGE grouped by PTID (empty dict for ``None``)."""
    if frame is None:
        return {}
    return {ptid: rows for ptid, rows in frame.groupby("PTID", sort=False)}


def visit_row(
    rows: pd.DataFrame | None,
    date: pd.Timestamp,
    image_ids: tuple[str, ...] = (),
    max_days: int = 180,
) -> pd.Series | None:
    """The ADNIMERGE row of a visit: the one naming an image (IMAGEUID), else the closest
    EXAMDATE within ``max_days``; ``None`` when there is none."""
    if rows is None or rows.empty:
        return None
    numbers = {i.lstrip("I") for i in image_ids}
    by_image = rows[rows["IMAGEUID"].isin(numbers)] if numbers else rows.iloc[:0]
    if not by_image.empty:
        return by_image.iloc[0]
    dated = rows.dropna(subset=["EXAMDATE"])
    if dated.empty:
        return None
    days = (dated["EXAMDATE"] - date).abs().dt.days
    best = days.idxmin()
    return dated.loc[best] if days.loc[best] <= max_days else None


def viscode_session(viscode: str) -> str | None:
    """``bl``/``sc``/``init`` -> ``ses-M000``, ``m06`` -> ``ses-M006``; else ``None``."""
    code = str(viscode).strip().lower()
    if code in ("bl", "sc", "scmri", "init", "m0", "m00"):
        return "ses-M000"
    match = _VISCODE_RE.match(code)
    return f"ses-M{int(match.group(1)):03d}" if match else None


def months_session(date: pd.Timestamp, first: pd.Timestamp) -> str:
    """``ses-M<months>``: months since ``first``, rounded to the nearest 6."""
    months = (date - first).days / 30.4375
    return f"ses-M{int(6 * round(months / 6)):03d}"


def diagnosis(row: pd.Series | None, csv_group: str) -> tuple[str | None, str]:
    """``(group, group_raw)``: DX at the visit, else DX_bl, else the CSV's Group."""
    if row is not None:
        for col in ("DX", "DX_bl"):
            raw = str(row.get(col, "")).strip()
            if raw:
                return map_group(raw), raw
    return map_group(csv_group), str(csv_group).strip()


def sex_and_age(
    csv_sex: str, csv_age: str, row: pd.Series | None, rows: pd.DataFrame | None
) -> tuple[str, str]:
    """Sex (M/F) and age at the visit: the CSV's, else ADNIMERGE's (baseline AGE + years)."""
    sex = str(csv_sex).strip().upper()[:1]
    if sex not in ("M", "F") and row is not None:
        sex = {"MALE": "M", "FEMALE": "F"}.get(str(row.get("PTGENDER", "")).upper(), "")
    if sex not in ("M", "F"):
        sex = ""
    try:
        return sex, f"{float(csv_age):.1f}"
    except (TypeError, ValueError):
        pass
    if row is not None and rows is not None:
        try:
            base_age = float(row.get("AGE", ""))
        except (TypeError, ValueError):
            return sex, ""
        baseline = rows[rows["VISCODE"].str.lower() == "bl"]["EXAMDATE"].dropna()
        if not baseline.empty and pd.notna(row["EXAMDATE"]):
            base_age += (row["EXAMDATE"] - baseline.iloc[0]).days / 365.25
        return sex, f"{base_age:.1f}"
    return sex, ""

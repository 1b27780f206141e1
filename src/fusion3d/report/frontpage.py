"""The report's front page: the study's results as reStructuredText, written by a rule.

``workflow/report/workflow.rst`` (the Snakefile's ``report:``) includes the file this module
writes, so ``snakemake --report`` opens on the cohort (pairs, exclusions by reason, QC
flags), Table 1 with its note, the paper-vs-ours comparison when the study has one, the
figures with what each shows, and the QC table of every subject with a link to its viewer.
Links to report items use the targets Snakemake defines for every file of the report (its
file name) and category (its name).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import pandas as pd

from fusion3d.io import atomic_path

#: Figures of the front page: report file name -> what it shows (the caption says how to read it).
FIGURES: dict[str, str] = {
    "fusion_panel.png": "test subjects in three planes: MRI, PET and every method's fusion",
    "metric_boxes.png": "each metric of the paper protocol over the test subjects, per method",
    "paper_vs_ours.png": "the paper's Table 1 beside ours, with 95 % confidence intervals",
    "training_curves.png": "the networks' losses and validation scores per epoch and seed",
    "probe_auc.png": "how much of the diagnosis each image keeps: cross-validated AUC with 95 % CI",
    "probe_roc.png": "the probe's out-of-fold ROC curves, references and methods",
    "page-001.png": "the first page of the QC montage (every subject's QC figure)",
}
#: Most distinct exclusion reasons listed one by one (the rest are counted together).
MAX_REASONS = 12


def _escape(text: object) -> str:
    """Text safe inside reStructuredText inline markup (no role or reference by accident)."""
    out = str(text)
    for ch in ("\\", "*", "`", "|", "_"):
        out = out.replace(ch, "\\" + ch)
    return out.replace("\n", " ")


def list_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> str:
    """A reStructuredText ``list-table`` (cells already in reStructuredText)."""
    lines = [f".. list-table:: {title}".rstrip(), "   :header-rows: 1", ""]
    for row in [list(header), *rows]:
        cells = [c if str(c).strip() else "\\ " for c in row]
        lines.append(f"   * - {cells[0]}")
        lines += [f"     - {c}" for c in cells[1:]]
    return "\n".join(lines) + "\n"


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]], list[str]]]:
    """The pipe tables of a Markdown file with the paragraphs that follow each one.

    Returns ``[(header, rows, notes)]``; ``**bold**`` cells stay bold (the same markup).
    """
    tables: list[tuple[list[str], list[list[str]], list[str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if all(set(c) <= set("-: ") for c in cells):
                continue
            if tables and not tables[-1][2] and tables[-1][0]:
                tables[-1][1].append(cells)
            else:
                tables.append((cells, [], []))
        elif stripped and tables:
            tables[-1][2].append(stripped)
    return tables


def _md_cell(cell: str) -> str:
    bold = cell.startswith("**") and cell.endswith("**") and len(cell) > 4
    inner = _escape(cell[2:-2] if bold else cell)
    return f"**{inner}**" if bold else inner


def table_from_markdown(path: str | os.PathLike, title: str) -> str:
    """A Markdown table file (Table 1, paper vs ours) as a list-table with its notes."""
    text = Path(path).read_text(encoding="utf-8")
    parts = []
    for header, rows, notes in markdown_tables(text):
        body = [[_md_cell(c) for c in row] for row in rows]
        parts.append(list_table([_escape(h) for h in header], body, title))
        parts += [_escape(n) + "\n" for n in notes]
    if not parts:
        raise ValueError(f"front page: {path} holds no Markdown table")
    return "\n".join(parts)


def cohort_section(
    pairs: pd.DataFrame, excluded: pd.DataFrame, split: pd.DataFrame, flags: pd.DataFrame
) -> str:
    """The cohort in a few lines: pairs by group, images left out by reason, split, QC flags."""
    groups = ", ".join(f"{g} {n}" for g, n in pairs["group"].value_counts().sort_index().items())
    lines = [f"- **{len(pairs)} image pairs** ({groups})."]
    if len(excluded):
        reasons = excluded["reason"].astype(str).value_counts()
        shown = [f"{_escape(r)}: {n}" for r, n in reasons.iloc[:MAX_REASONS].items()]
        if len(reasons) > MAX_REASONS:
            shown.append(
                f"{len(reasons) - MAX_REASONS} other reasons: {reasons.iloc[MAX_REASONS:].sum()}"
            )
        lines.append(f"- **{len(excluded)} images not used**, by reason: " + "; ".join(shown) + ".")
    else:
        lines.append("- Every image of the download is used.")
    counts = split["split"].value_counts()
    parts = [f"{s} {int(counts.get(s, 0))}" for s in ("train", "val", "test", "excluded")]
    lines.append("- **Split** by subject: " + ", ".join(parts) + ".")
    left = split[split["split"] == "excluded"]
    if len(left) and "split_reason" in left:
        reasons = left["split_reason"].astype(str).value_counts()
        lines.append(
            "- Left out of the split: "
            + "; ".join(f"{_escape(r)}: {n}" for r, n in reasons.items())
            + "."
        )
    if len(flags):
        by_flag = flags.groupby("flag")["subject_id"].nunique()
        lines.append(
            f"- **QC flags**: {len(flags)} on {flags['subject_id'].nunique()} subject(s) ("
            + ", ".join(f"{_escape(f)}: {n} subject(s)" for f, n in by_flag.items())
            + "); each in ``qc/flags.tsv`` with its reason."
        )
    else:
        lines.append("- **QC flags**: none.")
    return "\n".join(lines) + "\n"


def _qc_value(qc: pd.DataFrame, sid: str, column: str) -> str:
    if column not in qc.columns or sid not in qc.index:
        return "n/a"
    value = qc.at[sid, column]
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return _escape(value)


#: QC table columns of ``qc/qc.tsv`` shown on the front page, with their headers.
QC_COLUMNS: dict[str, str] = {
    "mask_volume_ml": "Brain mask (ml)",
    "t1_to_mni_after": "T1 -> MNI similarity",
    "pet_to_t1_after": "PET -> T1 similarity",
}


def viewer_link(sid: str, embedded: Collection[str] | None) -> str:
    """The link to a subject's viewer page: the report's own copy when it embeds the page
    (``embedded`` None: every page), else the file ``viewer/<subject>.html`` beside the report
    (relative to the results folder, where the README writes the report)."""
    if embedded is None or sid in embedded:
        return f"`{sid}.html`_"
    return f"`viewer/{_escape(sid)}.html <viewer/{sid}.html>`__"


def qc_table_section(
    split: pd.DataFrame,
    qc: pd.DataFrame,
    flags: pd.DataFrame,
    viewers: bool,
    embedded: Collection[str] | None = None,
) -> str:
    """One row per subject: group, split, QC figures, flags and the link to its viewer
    (:func:`viewer_link`)."""
    qc = qc.set_index("subject_id") if "subject_id" in qc.columns else qc
    columns = {c: h for c, h in QC_COLUMNS.items() if c in qc.columns}
    header = ["Subject", "Group", "Split", *columns.values(), "QC flags"]
    header += ["Viewer"] if viewers else []
    rows = []
    for row in split.itertuples(index=False):
        sid = row.subject_id
        subject_flags = flags.loc[flags["subject_id"] == sid, "flag"] if len(flags) else []
        cells = [_escape(sid), _escape(row.group), _escape(row.split)]
        cells += [_qc_value(qc, sid, c) for c in columns]
        cells.append(", ".join(_escape(f) for f in subject_flags) or "none")
        if viewers:
            cells.append(viewer_link(sid, embedded))
        rows.append(cells)
    return list_table(header, rows, "QC table: every subject")


def probe_section(probe_tsv: str | os.PathLike) -> str:
    """The diagnostic probe's table (``tables/probe.tsv``): AUC [95 % CI] and Holm p per row,
    or, for a task that could not be probed, its reason."""
    table = pd.read_csv(probe_tsv, sep="\t", keep_default_na=False)
    parts = []
    for task, part in table.groupby("task", sort=False):
        title = f"{_escape(task)} ({_escape(part['n_per_class'].iloc[0])})"
        if (part["status"] != "ok").all():
            parts.append(f"**{title}**: not computed. {_escape(part['reason'].iloc[0])}\n")
            continue
        rows = []
        for row in part.itertuples(index=False):
            p = "" if row.p_holm == "" else f"{float(row.p_holm):.3g}"
            rows.append(
                [
                    _escape(row.label),
                    f"{float(row.auc):.3f} [{float(row.ci_low):.3f}, {float(row.ci_high):.3f}]",
                    p,
                ]
            )
        parts.append(list_table(["Features", "AUC [95 % CI]", "Holm p vs T1 + PET"], rows, title))
    return "\n".join(parts)


def front_page(
    *,
    pairs: pd.DataFrame,
    excluded: pd.DataFrame,
    split: pd.DataFrame,
    flags: pd.DataFrame,
    qc: pd.DataFrame,
    table1_md: str | os.PathLike,
    paper_vs_ours_md: str | os.PathLike | None,
    figures: Sequence[str],
    viewers: bool,
    probe_tsv: str | os.PathLike | None = None,
    embedded: Collection[str] | None = None,
) -> str:
    """The front page's reStructuredText (see the module docstring).

    ``figures`` names the report's figure files present in this study (keys of
    :data:`FIGURES`); ``viewers`` whether there are viewer pages; ``embedded`` the subjects
    whose pages the report embeds (its Viewer category; None: every subject's).
    """
    parts = ["Cohort\n------\n", cohort_section(pairs, excluded, split, flags)]
    parts += [
        "Table 1\n-------\n",
        table_from_markdown(table1_md, "Table 1 (``tables/table1.md``)"),
    ]
    if paper_vs_ours_md is not None:
        parts += [
            "The paper beside this study\n---------------------------\n",
            table_from_markdown(paper_vs_ours_md, "Paper vs ours (``tables/paper_vs_ours.md``)"),
        ]
    if probe_tsv is not None:
        parts += [
            "Does a fused image keep the diagnosis?\n--------------------------------------\n",
            "Cross-validated ROC AUC of regional means (``tables/probe.tsv``; `probe_auc.png`_).\n",
            probe_section(probe_tsv),
        ]
    links = [f"- `{name}`_: {FIGURES[name]}." for name in figures if name in FIGURES]
    links.append("- `Tables`_: the paired tests (``wilcoxon_holm.tsv``).")
    if viewers and (embedded is None or embedded):
        links.append(
            "- `Viewer`_: interactive pages (T1, PET and each method's fused volume in three "
            "linked planes, the subject's QC figures and metric values)"
            + ("" if embedded is None else f" of {len(embedded)} subject(s) (``viewer.report``)")
            + "; every subject's page is linked from the QC table below."
        )
    if viewers and embedded is not None:
        links.append(
            "- Pages not embedded in this report are files beside it: ``viewer/<subject>.html`` "
            "in the results folder; their links below work when the report is written there "
            "(``--report <results>/report.html``)."
        )
    parts += ["Figures and viewers\n-------------------\n", "\n".join(links) + "\n"]
    parts += ["Subjects\n--------\n", qc_table_section(split, qc, flags, viewers, embedded)]
    return "\n".join(parts)


def write_front_page(out: str | os.PathLike, tables: Mapping[str, str | os.PathLike], **kw) -> Path:
    """Read the study's tables (``pairs``, ``excluded``, ``split``, ``flags``, ``qc``: paths)
    and write :func:`front_page` to ``out`` atomically."""
    frames = {}
    for key in ("pairs", "excluded", "split", "flags", "qc"):
        try:
            frames[key] = pd.read_csv(tables[key], sep="\t", dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"front page: cannot read {key} table {tables[key]}: {exc}") from exc
    text = front_page(**frames, **kw)
    path = Path(out)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path

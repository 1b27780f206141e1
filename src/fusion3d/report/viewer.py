"""One self-contained HTML viewer page per subject: T1, PET and every method's fused volume.

Each volume on the model grid becomes a *sprite* (its sagittal slices tiled into one 8-bit
image, the layout of brainsprite, the viewer behind nilearn's ``view_img``); the page draws
three planes of each with linked crosshairs (a click or drag in any view moves all of them),
a switch between the methods' fused volumes, the subject's QC figures and flags, and its
metric values per method. The JavaScript is ``brainsprite.min.js`` read from the installed
nilearn wheel (``nilearn/plotting/data/js``) and inlined, so the page opens from a file,
offline, with no server; nothing is fetched.

Cost per page: one lossless 8-bit PNG sprite per volume (``grid`` slices of ``grid^2``;
grey, or a palette for the coloured PET), the 12 kB script and a JPEG copy of the QC figure;
see :func:`write_subject_page` for the measured figures. So that a study of hundreds of
subjects stays a few GB of pages and an openable report (docs/benchmarks.md), only the pages
of the subjects in ``viewer.fused_splits`` (default: the test split) carry the methods'
fused volumes (:func:`write_viewer_pages`), and the report embeds only the pages that
``viewer.report`` names (:func:`report_subjects`; default: the figure subjects); every other
page is a file of ``viewer/`` that the report's front page links.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from fusion3d.io import atomic_path

#: The brainsprite build shipped in nilearn's wheel (package, file).
BRAINSPRITE = ("nilearn.plotting.data.js", "brainsprite.min.js")
#: Display window of the model-grid volumes (their intensities are in [0, 1]).
WINDOW = (0.0, 1.0)
#: Colour map of the PET (matplotlib name).
PET_CMAP = "hot"
#: Width in pixels of the QC figure's copy in the page.
QC_WIDTH = 900
#: The splits of a study, in order (a page's fused volumes are shown for some of them).
SPLITS = ("train", "val", "test", "excluded")
#: The page's note when it shows no fused volume (the subject was not fused).
NO_FUSED = "No fused volume: the subject is not in the evaluated splits."
#: Values of ``viewer.report``: the pages the report embeds (the rest are linked).
REPORT_CHOICES = ("figures", "test", "all", "none")

_JS: list[str] = []


def brainsprite_js() -> str:
    """The brainsprite script from the installed nilearn (ValueError naming it when absent).

    The file is located without importing ``nilearn.plotting`` (seconds of imports)."""
    if not _JS:
        package, name = BRAINSPRITE
        top = package.split(".")[0]
        spec = importlib.util.find_spec(top)
        roots = list(spec.submodule_search_locations or []) if spec else []
        path = Path(roots[0] if roots else "", *package.split(".")[1:], name)
        if not roots or not path.is_file():
            raise ValueError(
                f"viewer: {path} not found; the viewer needs nilearn (its wheel ships brainsprite)"
            )
        _JS.append(path.read_text(encoding="utf-8"))
    return _JS[0]


def load_volume(path: str | os.PathLike) -> np.ndarray:
    """A 3D volume reoriented to RAS (closest canonical), as float32."""
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise ValueError(f"viewer: cannot read the volume {path}: {exc}") from exc
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"viewer: {path} has shape {data.shape}, expected a 3D volume")
    return data


def sprite_layout(shape: Sequence[int]) -> tuple[int, int]:
    """(rows, columns) of the sagittal tiles of a volume of ``shape`` (brainsprite's layout)."""
    nx = int(shape[0])
    rows = int(math.ceil(math.sqrt(nx)))
    return rows, int(math.ceil(nx / rows))


def to_sprite(data: np.ndarray) -> np.ndarray:
    """Tile the sagittal slices of a RAS volume ``(x, y, z)`` into one 2D array.

    Slice ``x`` sits at row ``x // columns``, column ``x % columns``; each tile is
    ``(z, y)`` with superior up, as brainsprite reads it.
    """
    nx, ny, nz = data.shape
    rows, cols = sprite_layout(data.shape)
    sprite = np.zeros((rows * nz, cols * ny), dtype=data.dtype)
    for x in range(nx):
        r, c = divmod(x, cols)
        sprite[r * nz : (r + 1) * nz, c * ny : (c + 1) * ny] = data[x, :, ::-1].T
    return sprite


def _to_uint8(data: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    scaled = (np.nan_to_num(data, nan=low) - low) / max(high - low, 1e-12)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def encode_sprite(
    data: np.ndarray, *, window: tuple[float, float] = WINDOW, cmap: str | None = None
) -> str:
    """A volume's sprite as a lossless 8-bit PNG data URI: grey, or a palette of ``cmap``.

    Lossless on purpose: what a reader inspects in a fused volume (edges, artefacts) must
    not be compression artefacts."""
    from PIL import Image

    tiles = _to_uint8(to_sprite(data), window)
    image = Image.fromarray(tiles, mode="L")
    if cmap is not None:
        from matplotlib import colormaps

        lut = (colormaps[cmap](np.arange(256) / 255.0)[:, :3] * 255).round().astype(np.uint8)
        image = image.convert("P")
        image.putpalette(lut.tobytes())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def encode_figure(path: str | os.PathLike, width: int = QC_WIDTH) -> str:
    """A PNG figure as a JPEG data URI, scaled down to ``width`` pixels when wider."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    return f"data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def qc_rows(qc: Mapping) -> list[tuple[str, str]]:
    """(figure, value) rows of a subject's ``qc.json`` for the page, in a fixed order."""
    reg = qc.get("registration", {})
    rows = [("Brain-mask volume (ml)", qc.get("mask_volume_ml"))]
    for key, label in (("t1_to_mni", "T1 -> MNI152"), ("pet_to_t1", "PET -> T1")):
        step = reg.get(key, {})
        metric = step.get("metric", "")
        for when in ("before", "after"):
            rows.append((f"{label} {metric} {when}", step.get(f"similarity_{when}")))
    left_right = reg.get("pet_to_t1", {}).get("left_right", {})
    if left_right:
        rows.append(("PET left-right mirror gain", left_right.get("mirror_gain")))
    suvr = qc.get("suvr", {})
    rows.append(
        (f"SUVR reference ({suvr.get('region', '?')}) voxels", suvr.get("reference_voxels"))
    )
    rows.append(("Preprocessing time (s)", qc.get("times_s", {}).get("total")))
    return [(name, _fmt(value)) for name, value in rows]


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metric_tables(metrics: pd.DataFrame, labels: Mapping[str, str]) -> dict[str, pd.DataFrame]:
    """Per protocol, a methods x metrics table of one subject's values (mean over seeds).

    ``metrics`` holds the long rows (``method``, ``protocol``, ``metric``, ``value`` and,
    for networks, ``seed``) of one subject; ``labels`` orders and names the methods.
    """
    tables: dict[str, pd.DataFrame] = {}
    if metrics.empty:
        return tables
    means = metrics.groupby(["protocol", "method", "metric"], sort=False)["value"].mean()
    for protocol in dict.fromkeys(metrics["protocol"]):
        wide = means.loc[protocol].unstack("metric")
        order = [m for m in labels if m in wide.index]
        tables[protocol] = wide.loc[order].rename(index=dict(labels))
    return tables


def _table_html(frame: pd.DataFrame, caption: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        f"<tr><th>{html.escape(str(index))}</th>"
        + "".join(f"<td>{_fmt(float(v))}</td>" for v in row)
        + "</tr>"
        for index, row in zip(frame.index, frame.to_numpy(), strict=True)
    )
    return f"<table><caption>{html.escape(caption)}</caption><tr><th></th>{head}</tr>{body}</table>"


def _rows_html(rows: Sequence[tuple[str, str]], caption: str) -> str:
    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<table><caption>{html.escape(caption)}</caption>{body}</table>"


_STYLE = """
body{font-family:sans-serif;margin:1em;max-width:1100px;background:#fff;color:#222}
.view{width:100%;max-width:960px;background:#000;margin:.2em 0 .8em 0}
.view canvas{display:block}
h2{font-size:1.1em;margin:.8em 0 .2em 0}
button{margin:0 .3em .3em 0;padding:.2em .6em}
button.on{background:#246;color:#fff}
table{border-collapse:collapse;margin:.5em 1.5em .8em 0;font-size:.85em;display:inline-table}
td,th{border:1px solid #ccc;padding:.15em .5em;text-align:right}
caption{font-weight:bold;text-align:left;padding:.2em 0}
.flag{color:#a00}
.note{color:#555;font-size:.85em}
"""

_SCRIPT = """
(function () {
  var D = JSON.parse(document.getElementById("viewer-data").textContent);
  var brains = [];
  function sync(src) {
    brains.forEach(function (b) {
      if (b !== src) {
        b.numSlice.X = src.numSlice.X; b.numSlice.Y = src.numSlice.Y;
        b.numSlice.Z = src.numSlice.Z; b.drawAll();
      }
    });
  }
  function make(canvas, sprite, title) {
    var b = brainsprite({canvas: canvas, sprite: sprite, nbSlice: D.nbSlice, crosshair: true,
      colorCrosshair: "#00ff00", title: title, sizeFont: 0.06, flagCoordinates: true,
      affine: D.affine, showLR: true});
    b.onclick = function () { sync(b); };
    brains.push(b);
    return b;
  }
  function start() {
    make("canvas-t1", "sprite-t1", "T1");
    make("canvas-pet", "sprite-pet", "PET (SUVR, " + D.petCmap + ")");
    if (!D.methods.length) { return; }
    var fused = make("canvas-fused", "sprite-" + D.methods[0].key, D.methods[0].label);
    D.methods.forEach(function (m) {
      document.getElementById("button-" + m.key).addEventListener("click", function () {
        fused.sprite = document.getElementById("sprite-" + m.key);
        fused.title = m.label; fused.init(); fused.drawAll();
        D.methods.forEach(function (o) {
          document.getElementById("button-" + o.key).className = o.key === m.key ? "on" : "";
        });
      });
    });
  }
  window.addEventListener("load", start);
})();
"""


def subject_page(
    *,
    subject_id: str,
    sprites: Mapping[str, str],
    methods: Sequence[tuple[str, str]],
    shape: Sequence[int],
    affine: np.ndarray,
    info: Mapping[str, str],
    qc: Mapping,
    flags: Sequence[str],
    metrics: Mapping[str, pd.DataFrame],
    qc_figure: str | None,
    no_fused: str = NO_FUSED,
) -> str:
    """The HTML of one subject's viewer page (see the module docstring).

    ``sprites`` maps ``t1``, ``pet`` and each method key to a data URI; ``methods`` lists
    ``(key, label)`` of the fused volumes, in order; ``info`` the subject's table fields;
    ``no_fused`` the note shown in place of the fused view when ``methods`` is empty.
    """
    nx, ny, nz = (int(s) for s in shape)
    data = {
        "nbSlice": {"X": nx, "Y": ny, "Z": nz},
        "affine": np.asarray(affine, dtype=float)[:4].round(4).tolist(),
        "methods": [{"key": k, "label": label} for k, label in methods],
        "petCmap": PET_CMAP,
    }
    images = "".join(
        f'<img id="sprite-{html.escape(k)}" src="{uri}" alt="{html.escape(k)}">'
        for k, uri in sprites.items()
    )
    buttons = "".join(
        f'<button id="button-{html.escape(k)}"{" class=on" if i == 0 else ""}>'
        f"{html.escape(label)}</button>"
        for i, (k, label) in enumerate(methods)
    )
    fused = (
        f'<h2>Fused volume</h2><div>{buttons}</div><div class="view"><canvas id="canvas-fused">'
        "</canvas></div>"
        if methods
        else f'<p class="note">{html.escape(no_fused)}</p>'
    )
    summary = " &middot; ".join(
        f"{html.escape(k)}: <b>{html.escape(str(v))}</b>" for k, v in info.items()
    )
    flag_html = (
        "".join(f'<li class="flag">{html.escape(f)}</li>' for f in flags)
        if flags
        else "<li>none</li>"
    )
    tables = (
        "".join(
            _table_html(frame, f"Metrics, protocol {protocol}")
            for protocol, frame in metrics.items()
        )
        or '<p class="note">No metric values for this subject.</p>'
    )
    figure = f'<img src="{qc_figure}" alt="QC figure" style="max-width:100%">' if qc_figure else ""
    payload = json.dumps(data).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>{html.escape(subject_id)}</title>
<style>{_STYLE}</style></head><body>
<h1 style="font-size:1.3em">{html.escape(subject_id)}</h1>
<p>{summary}</p>
<p class="note">Model grid {nx} x {ny} x {nz}, RAS. Click or drag in any view: the three planes of
every volume follow (linked crosshairs). Grey volumes are shown in the window [0, 1] of the model
grid, so the methods' intensities compare directly.</p>
<div style="display:none">{images}</div>
<h2>T1 (MRI)</h2><div class="view"><canvas id="canvas-t1"></canvas></div>
<h2>FDG PET (SUVR, colour map {PET_CMAP})</h2><div class="view"><canvas id="canvas-pet"></canvas></div>
{fused}
<h2>Metrics</h2>{tables}
<p class="note">Networks: the mean over the training seeds of each value.</p>
<h2>Quality control</h2>{_rows_html(qc_rows(qc), "QC figures (qc.json)")}
<div><b>Flags</b><ul>{flag_html}</ul></div>{figure}
<script id="viewer-data" type="application/json">{payload}</script>
<script>{brainsprite_js()}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write_subject_page(
    out_path: str | os.PathLike,
    *,
    subject_id: str,
    t1: str | os.PathLike,
    pet: str | os.PathLike,
    fused: Mapping[str, str | os.PathLike],
    labels: Mapping[str, str],
    info: Mapping[str, str],
    qc_json: str | os.PathLike,
    qc_png: str | os.PathLike | None,
    flags: Sequence[str],
    metrics: pd.DataFrame,
    no_fused: str = NO_FUSED,
) -> Path:
    """Write one subject's viewer page (atomically) and return its path.

    ``fused`` maps method keys to the subject's fused NIfTI; ``labels`` gives every method's
    display label in the study's order; ``metrics`` the subject's long metric rows;
    ``no_fused`` the page's note when ``fused`` is empty.
    Measured (``benchmarks/bench_viewer.py``, docs/benchmarks.md): with 10 methods 1.5 MB
    and 1.0 s a page at 64^3, 9.1 MB and 2.6 s at 128^3; T1 and PET alone 0.37 and 1.7 MB.
    """
    t1_data = load_volume(t1)
    reference = nib.as_closest_canonical(nib.load(str(t1)))
    sprites = {"t1": encode_sprite(t1_data), "pet": encode_sprite(load_volume(pet), cmap=PET_CMAP)}
    methods = []
    for key in labels:
        if key in fused:
            volume = load_volume(fused[key])
            if volume.shape != t1_data.shape:
                raise ValueError(
                    f"viewer: {fused[key]} has shape {volume.shape}, the T1 {t1} {t1_data.shape}"
                )
            sprites[key] = encode_sprite(volume)
            methods.append((key, labels[key]))
    try:
        qc = json.loads(Path(qc_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"viewer: cannot read the QC record {qc_json}: {exc}") from exc
    page = subject_page(
        subject_id=subject_id,
        sprites=sprites,
        methods=methods,
        shape=t1_data.shape,
        affine=reference.affine,
        info=info,
        qc=qc,
        flags=list(flags),
        metrics=metric_tables(metrics, labels),
        qc_figure=encode_figure(qc_png) if qc_png else None,
        no_fused=no_fused,
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return out


def read_fused_indexes(indexes: Mapping[str, str | os.PathLike]) -> dict[str, dict[str, str]]:
    """``{method: {subject_id: fused_path}}`` from each method's ``index.tsv``."""
    out: dict[str, dict[str, str]] = {}
    for method, path in indexes.items():
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        missing = {"subject_id", "fused_path"} - set(frame.columns)
        if missing:
            raise ValueError(f"viewer: {path}: missing column(s) {sorted(missing)}")
        out[method] = dict(zip(frame["subject_id"], frame["fused_path"], strict=True))
    return out


def _subject_flags(flags: pd.DataFrame, subject_id: str) -> list[str]:
    rows = flags[flags["subject_id"] == subject_id] if not flags.empty else flags
    return [f"{row.flag} ({row.kind}): {row.reason}" for row in rows.itertuples(index=False)]


def check_fused_splits(fused_splits: Sequence[str]) -> tuple[str, ...]:
    """``viewer.fused_splits`` as a tuple (ValueError naming the key for an unknown split)."""
    unknown = sorted(set(fused_splits) - set(SPLITS[:3]))
    if unknown:
        raise ValueError(
            f"viewer.fused_splits: unknown split(s) {unknown}; choose from {list(SPLITS[:3])}"
        )
    return tuple(fused_splits)


def no_fused_note(split_name: str, fused_splits: Sequence[str]) -> str:
    """The note of a page without fused volumes: why, and the key that changes it."""
    if split_name not in SPLITS[:3]:
        return NO_FUSED
    shown = ", ".join(fused_splits) or "none"
    return (
        f"No fused volume on this page: this subject is in the {split_name} split, and the "
        f"pages show the methods' fused volumes for the splits viewer.fused_splits = [{shown}] "
        "(the config key; fused volumes are in fused/<method>/<run>/)."
    )


def report_subjects(split: pd.DataFrame, choice: str, figure_subjects: Sequence[str]) -> list[str]:
    """The subjects whose viewer pages the report embeds (``viewer.report``).

    ``figures``: the subjects of the paper-style figure (``figure_subjects``); ``test``: the
    test split; ``all``: every subject; ``none``: no page. In ``split`` order.
    """
    if choice not in REPORT_CHOICES:
        raise ValueError(f"viewer.report: {choice!r} is not one of {list(REPORT_CHOICES)}")
    wanted = {
        "figures": set(figure_subjects),
        "test": set(split.loc[split["split"] == "test", "subject_id"]),
        "all": set(split["subject_id"]),
        "none": set(),
    }[choice]
    return [sid for sid in split["subject_id"] if sid in wanted]


def figure_subjects(
    split: pd.DataFrame, fused: Mapping[str, Mapping[str, str]], n_subjects: int
) -> list[str]:
    """The subjects of the paper-style figure: the fusion panel's choice
    (:func:`fusion3d.report.figures.pick_panel_subjects`) among the test subjects every method
    has fused; none when there is no such subject."""
    from fusion3d.report.figures import pick_panel_subjects

    common = set.intersection(*(set(p) for p in fused.values())) if fused else set()
    test = set(split.loc[split["split"] == "test", "subject_id"])
    if not common & test:
        return []
    return pick_panel_subjects(split, sorted(common), n_subjects=n_subjects)


def copy_report_pages(
    pages_dir: str | os.PathLike, report_dir: str | os.PathLike, subjects: Sequence[str]
) -> list[Path]:
    """Put the pages of ``subjects`` into ``report_dir`` (the folder the report embeds).

    A hard link where the file system allows one (no second copy on disk), a copy otherwise.
    """
    import shutil

    out_dir = Path(report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for sid in subjects:
        source, target = Path(pages_dir) / f"{sid}.html", out_dir / f"{sid}.html"
        if not source.is_file():
            raise ValueError(f"viewer: the report's page {source} was not written")
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        out.append(target)
    return out


def write_viewer_pages(
    out_dir: str | os.PathLike,
    *,
    split: pd.DataFrame,
    indexes: Mapping[str, str | os.PathLike],
    labels: Mapping[str, str],
    qc_jsons: Mapping[str, str],
    qc_pngs: Mapping[str, str],
    flags: pd.DataFrame,
    long: pd.DataFrame,
    fused_splits: Sequence[str] = SPLITS[:3],
) -> list[Path]:
    """One page ``<out_dir>/<subject_id>.html`` for every subject of ``split`` (all splits).

    ``split`` holds ``subject_id``, ``group``, ``split``, ``split_reason`` and the model-grid
    images ``model_mri`` and ``model_pet``; ``indexes`` maps each method (in ``labels``
    order) to its ``index.tsv``; ``qc_jsons`` / ``qc_pngs`` map subjects to their QC record
    and figure; ``flags`` is ``qc/flags.tsv`` and ``long`` ``tables/metrics_long.tsv``.
    Only the pages of subjects in ``fused_splits`` show the fused volumes (the costly part
    of a page: one sprite per method); the others say why they show none.
    """
    fused_splits = check_fused_splits(fused_splits)
    fused = read_fused_indexes(indexes)
    pages = []
    for row in split.itertuples(index=False):
        sid = row.subject_id
        shown = row.split in fused_splits
        info = {"group": row.group, "split": row.split}
        reason = getattr(row, "split_reason", "")
        if reason:
            info["split reason"] = reason
        pages.append(
            write_subject_page(
                Path(out_dir) / f"{sid}.html",
                subject_id=sid,
                t1=row.model_mri,
                pet=row.model_pet,
                fused={m: paths[sid] for m, paths in fused.items() if shown and sid in paths},
                labels=labels,
                info=info,
                qc_json=qc_jsons[sid],
                qc_png=qc_pngs.get(sid),
                flags=_subject_flags(flags, sid),
                metrics=long[long["subject_id"] == sid],
                no_fused=no_fused_note(row.split, fused_splits),
            )
        )
    return pages


def write_report_pages(
    pages_dir: str | os.PathLike,
    report_dir: str | os.PathLike,
    *,
    split: pd.DataFrame,
    indexes: Mapping[str, str | os.PathLike],
    choice: str,
    n_figure_subjects: int,
) -> list[Path]:
    """The pages the report embeds (``viewer.report`` = ``choice``), put in ``report_dir``.

    ``pages_dir`` holds every page (:func:`write_viewer_pages`); ``indexes`` the methods'
    ``index.tsv`` (the figure subjects are among those every method has fused).
    """
    figures = figure_subjects(split, read_fused_indexes(indexes), n_figure_subjects)
    return copy_report_pages(pages_dir, report_dir, report_subjects(split, choice, figures))

"""A search's report: one HTML page (and its PNGs) on the parent run in MLflow.

It shows how the search went (Optuna's optimisation history), what mattered (the hyperparameter
importances from Optuna's fANOVA evaluator, and parallel coordinates over the searched keys), how
the refits compare with the best trial and cubic B-spline on the whole held-out regions, and a
picture of the candidate that promotion offers against cubic B-spline on the held-out anatomy.
The Optuna study itself lives in its own store (`optuna_storage`), which `optuna-dashboard` opens.
"""

import base64
import html
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from mlflow.tracking import MlflowClient

REPORT_FOLDER = "report"  # the parent run's artifact folder
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class Row:
    """One line of the comparison on the whole held-out regions."""

    label: str
    psnr: float
    ssim: float
    steps: int | None = None


@dataclass(frozen=True)
class StudyPlace:
    """Where a search keeps its Optuna study: `url` (an Optuna RDB storage) and the study's `name`."""

    url: str
    name: str

    @classmethod
    def for_search(cls, tracking_uri: str, fallback_folder: Path, search: str, parent_run_id: str) -> "StudyPlace":
        """Beside MLflow's SQLite file, or (a tracking server) in `fallback_folder` on the machine that
        runs the search. Named for the search and its parent run: a new search of an old name (its
        Ray state deleted) starts a new study, as it starts a new parent run."""
        if tracking_uri.startswith("sqlite:///"):
            url = f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).with_name('optuna.db')}"
        else:
            fallback_folder.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{fallback_folder.resolve() / 'optuna.db'}"
        return cls(url, f"{search}-{parent_run_id[:8]}")

    def load(self) -> optuna.Study | None:
        """The study, or None where this store has none of that name (a search started before studies
        were kept)."""
        try:
            return optuna.load_study(study_name=self.name, storage=self.url)
        except KeyError:
            return None


def _figures(study: optuna.Study, folder: Path) -> dict[str, Path | str]:
    """Optuna's plots as PNGs, by title; a sentence instead of a plot where the study cannot give one."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    out: dict[str, Path | str] = {}
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    wanted = {
        "Optimisation history": plots.plot_optimization_history,
        "Hyperparameter importances (fANOVA)": plots.plot_param_importances,
        "Parallel coordinates": plots.plot_parallel_coordinate,
    }
    for index, (title, plot) in enumerate(wanted.items()):
        if len(done) < 2:
            out[title] = f"needs two finished trials; this search has {len(done)}"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as err:  # e.g. no parameter varied between the trials
                out[title] = f"not available: {err}"
                continue
        figure = np.atleast_1d(axes)[0].figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        path = folder / f"{index + 1}_{title.split(' (')[0].lower().replace(' ', '_')}.png"
        figure.savefig(path, dpi=90)
        plt.close(figure)
        out[title] = path
    return out


def _comparison(rows: list[Row], folder: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 0.5 + 0.45 * len(rows)))
    labels = [row.label for row in rows][::-1]
    values = [row.psnr for row in rows][::-1]
    bars = axis.barh(labels, values, color=["#999999" if "cubic" in label else "#3b6ea8" for label in labels])
    low = min(values) - 1.0
    axis.set_xlim(low, max(values) + 0.6)
    axis.bar_label(bars, labels=[f"{v:.2f} dB" for v in values], padding=3)
    axis.set_xlabel("PSNR in brain on the whole held-out regions (dB)")
    figure.tight_layout()
    path = folder / "4_held_out_comparison.png"
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def write_report(folder: Path, title: str, study: optuna.Study | None, rows: list[Row], picture: Path | None,
                 notes: list[str]) -> Path:
    """The report page and its PNGs in `folder`; returns the page. Images are embedded, so the page
    alone is the whole report."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    sections = [f"<h1>{html.escape(title)}</h1>", *(f"<p>{html.escape(n)}</p>" for n in notes)]
    figures = _figures(study, folder) if study is not None else {"Optuna study": "not recorded for this search"}
    for heading, content in figures.items():
        body = _image(content) if isinstance(content, Path) else f"<p><em>{html.escape(content)}</em></p>"
        sections.append(f'<section><h2>{html.escape(heading)}</h2>{body}</section>')
    if rows:
        table = "".join(
            f"<tr><td>{html.escape(r.label)}</td><td>{'' if r.steps is None else r.steps}</td>"
            f"<td>{r.psnr:.2f}</td><td>{r.ssim:.3f}</td></tr>" for r in rows)
        sections.append(
            '<section><h2>Refits, best trial and cubic B-spline on the whole held-out regions</h2>'
            f"{_image(_comparison(rows, folder))}"
            f"<table><tr><th></th><th>steps</th><th>PSNR in brain (dB)</th><th>SSIM</th></tr>{table}</table></section>")
    if picture is not None:
        sections.append('<section><h2>The candidate promotion offers, against cubic B-spline</h2>'
                        f"{_image(picture)}</section>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
             "img{max-width:100%}table{border-collapse:collapse}td,th{padding:.2em .8em;text-align:right}"
             "td:first-child{text-align:left}section{margin-top:2em}")
    page = folder / REPORT_FILE
    page.write_text(f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                    f"<style>{style}</style></head><body>{''.join(sections)}</body></html>")
    return page


def log_report(client: MlflowClient, run_id: str, title: str, study: optuna.Study | None, rows: list[Row],
               draw_picture, notes: list[str]) -> str:
    """Write the report and log it (and its PNGs) on the run; returns the page's artifact URI.
    `draw_picture(path)` draws the candidate's picture there (None: no candidate)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / REPORT_FOLDER
        folder.mkdir()
        picture = draw_picture(folder / "5_candidate_against_cubic.png") if draw_picture is not None else None
        write_report(folder, title, study, rows, picture, notes)
        client.log_artifacts(run_id, str(folder), artifact_path=REPORT_FOLDER)
    return f"{client.get_run(run_id).info.artifact_uri}/{REPORT_FOLDER}/{REPORT_FILE}"

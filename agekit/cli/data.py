"""`agekit data ...`: turn a dataset into a deduplicated, split manifest, and look inside one."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets as manifests (dedup + split) and summarise them.")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _ui():
    from .main import console, fail  # lazy: main imports this module while it registers sub-apps

    return console, fail


def _parse_fracs(text: str, fail) -> tuple[float, float, float]:
    try:
        fracs = tuple(float(x) for x in text.split(","))
    except ValueError:
        fail(f"--fracs must be three numbers like 0.8,0.1,0.1, got {text!r}")
    if len(fracs) != 3 or any(f < 0 for f in fracs) or abs(sum(fracs) - 1) > 1e-6:
        fail(f"--fracs must be three non-negative numbers summing to 1, got {text!r}")
    return fracs  # type: ignore[return-value]


def _message(e: Exception) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


@data_app.command("formats")
def formats_cmd() -> None:
    """List the dataset formats `data prepare` can read."""
    from ..data.adapters import ADAPTERS, _load_all

    console, _ = _ui()
    _load_all()
    table = Table("format", "reads")
    for name in sorted(ADAPTERS):
        doc = (sys.modules[ADAPTERS[name].__module__].__doc__ or "").strip()
        table.add_row(name, doc.splitlines()[0] if doc else "")
    console.print(table)


@data_app.command("prepare")
def prepare_cmd(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="utkface, fgnet, aaf, peta, lagenda or folder (see `agekit data formats`)"),
    root: Path = typer.Argument(..., metavar="ROOT", help="dataset folder (images root for lagenda/folder)"),
    out: Path = typer.Option(..., "--out", "-o", help="manifest to write (.csv, or .parquet with pyarrow)"),
    split: str = typer.Option("default", help="default|random|subject|kfold|none; default = shipped/official split"),
    seed: int = typer.Option(0, help="seed for random/subject/kfold splits"),
    fracs: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions"),
    k: int = typer.Option(5, "--k", help="folds for --split kfold"),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="remove byte-identical copies before splitting"),
    conflict: str = typer.Option("drop", help="copies whose labels disagree: drop the group, or median age"),
    split_out: Optional[Path] = typer.Option(None, help="split file (file,split); default: <out>.split.csv"),
    labels: Optional[Path] = typer.Option(None, help="label CSV for lagenda/folder (default: the one CSV in ROOT)"),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="lagenda/folder: skip listed images that are missing"),
    detect: bool = typer.Option(True, "--detect/--no-detect",
                                help="face boxes without landmarks: run the face detector once and store the five points "
                                     "(rows it cannot match are dropped); --no-detect leaves them, and training/eval will refuse them"),
) -> None:
    """Read a dataset, drop duplicate images, split, and write a manifest plus its split file."""
    from ..data.prepare import check_output, prepare_manifest, write_prepared

    console, fail = _ui()
    if conflict not in ("drop", "median"):
        fail(f"--conflict must be drop or median, got {conflict!r}")
    parsed = _parse_fracs(fracs, fail)
    try:
        check_output(out)
        df, report = prepare_manifest(fmt, root, split=split, seed=seed, fracs=parsed, k=k, dedup=dedup,
                                      conflict=conflict, labels=labels, allow_missing=allow_missing)
        if detect:
            df = _detect_landmarks(console, df, report)
        written = write_prepared(df, out, root, split_out)
    except (OSError, ValueError, KeyError) as e:
        fail(_message(e))
    _print_report(console, report, written)


def _detect_landmarks(console, df, report: dict):
    """Five landmarks for rows with a face box and none (the crop path aligns on them); drop misses."""
    from ..inference.landmarks import detect_landmarks, rows_needing_landmarks

    need = rows_needing_landmarks(df)
    if not need.any():
        return df
    with console.status(f"detecting faces for {int(need.sum()):,} boxes without landmarks ..."):
        df = detect_landmarks(df)
    missed = df.attrs["landmarks_unmatched"]
    report["notes"].append(f"{df.attrs['landmarks_detected']:,} face boxes got five landmarks from the face detector")
    if missed:
        df = df[~rows_needing_landmarks(df)].reset_index(drop=True)
        report["notes"].append(f"{len(missed):,} face boxes matched no detected face (IoU < 0.3) or could not be read: "
                               f"rows dropped, e.g. {missed[0]}")
        report["rows_out"] = int(len(df))
        if "split" in df.columns:
            counts = df["split"].value_counts().to_dict()
            report["split_counts"] = {k: int(counts[k]) for k in report["split_counts"] if k in counts}
    return df


def _print_report(console, report: dict, written: dict) -> None:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_row("format", f"{report['format']} ({report['root']})")
    t.add_row("rows read", f"{report['rows_read']:,}")
    d = report.get("dedup")
    if d:
        t.add_row("duplicates", f"{d['duplicate_groups']:,} groups of byte-identical images, "
                                f"{d['conflicting_groups']:,} with conflicting labels (policy: {d['conflict_policy']}); "
                                f"{d['rows_in']:,} -> {d['rows_out']:,} rows")
    else:
        t.add_row("duplicates", "[yellow]not removed (--no-dedup): copies may straddle splits[/]")
    t.add_row("split", report["split"])
    if report["split_counts"]:
        t.add_row("", ", ".join(f"{k}: {v:,}" for k, v in report["split_counts"].items()))
    t.add_row("rows written", f"{report['rows_out']:,}")
    for note in report["notes"]:
        t.add_row("note", note)
    if report["leaks"]:
        t.add_row("[bold red]warning[/]", f"{report['leaks']} images (content hash) appear in more than one split")
    for what, path in written.items():
        t.add_row(what.replace("_", " "), path)
    console.print(t)


@data_app.command("stats")
def stats_cmd(
    manifest: Path = typer.Argument(..., help="manifest .csv or .parquet"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the numbers as JSON"),
    bin_width: int = typer.Option(5, "--bin", help="age histogram bin width in years (e.g. 5 or 10)"),
    lds: bool = typer.Option(False, "--lds", help="also report the LDS sample-weight range"),
) -> None:
    """Counts per split/source, the age histogram, and gender/race groups of a manifest."""
    from ..data.manifest import read_manifest
    from ..data.prepare import parquet_engine
    from ..data.stats import manifest_stats

    console, fail = _ui()
    if manifest.suffix == ".parquet" and parquet_engine() is None:
        fail(f"{manifest}: reading .parquet needs pyarrow, which is not installed (pip install pyarrow)")
    try:
        df = read_manifest(manifest, require_age=False)
        stats = manifest_stats(df, bin_width=bin_width, lds=lds)
    except (OSError, ValueError) as e:
        fail(str(e))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(stats, indent=2))
    _print_stats(console, manifest, stats)


def _group(title: str, rows: list[dict]) -> Table:
    people = any(r.get("people") is not None for r in rows)
    t = Table(title, "rows", *(["people"] if people else []), "mean age", title_justify="left")
    for r in rows:
        extra = [f"{r['people']:,}" if r.get("people") is not None else "-"] if people else []
        t.add_row(r["group"], f"{r['count']:,}", *extra, "-" if r["mean_age"] is None else f"{r['mean_age']:.1f}")
    return t


def _age_groups(rows: list[dict]) -> Table:
    """Images / people per age group (interval labels), overall and per split."""
    splits = sorted({k for r in rows for k in r.get("by_split", {})},
                    key=lambda k: ({"train": 0, "val": 1, "test": 2}.get(k, 3), k))

    def cell(d: dict | None) -> str:
        if not d:
            return "0"
        return f"{d['images']:,}" + (f" / {d['people']:,}" if d.get("people") is not None else "")

    t = Table("age group", "images / people", *splits, title="age groups (interval labels): images / people",
              title_justify="left")
    for r in rows:
        t.add_row(r["group"], cell(r), *(cell(r.get("by_split", {}).get(k)) for k in splits))
    return t


def _print_stats(console, manifest: Path, s: dict) -> None:
    from rich.columns import Columns

    a = s["age"]
    console.print(f"[bold]{manifest}[/]: {s['rows']:,} rows; age {a['count']:,} known"
                  + (f", {a['min']:g}-{a['max']:g}, mean {a['mean']:.1f}, median {a['median']:g}" if a["count"] else "")
                  + (f", {a['age_group_only']:,} by age group only" if a.get("age_group_only") else "")
                  + (f", [yellow]{a['missing']:,} missing[/]" if a["missing"] else ""))
    tables = [_group(name, s[key]) for name, key in (("split", "splits"), ("source", "sources"),
                                                     ("gender", "gender"), ("race", "race")) if s[key]]
    console.print(Columns(tables, padding=(0, 3)))
    if s.get("age_groups"):
        console.print(_age_groups(s["age_groups"]))
    hist = s["age_histogram"]
    if hist:
        top = max(b["count"] for b in hist) or 1
        weighted = any("mean_weight" in b for b in hist)
        h = Table("age", "", "rows", *(["LDS w"] if weighted else []), box=None, title="age histogram", title_justify="left")
        for b in hist:
            bar = "█" * int(round(40 * b["count"] / top)) or ("▏" if b["count"] else "")
            extra = [] if not weighted else ["-" if b.get("mean_weight") is None else f"{b['mean_weight']:.2f}"]
            h.add_row(f"{b['lo']}-{b['hi'] - 1}", f"[cyan]{bar}[/]", f"{b['count']:,}", *extra)
        console.print(h)
    if "lds" in s:
        l = s["lds"]
        console.print(f"LDS weights ({l['computed_on']}, {l['rows']:,} rows): {l['min']:.3g} to {l['max']:.3g} "
                      f"(max/min {l['max_over_min']:.3g}, mean {l['mean']:.3g})")


@data_app.command("pack")
def pack_cmd(
    config: Path = typer.Argument(..., help="training config (YAML) whose data to pack"),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for manifests/, shards/ and pack.json"),
    splits: str = typer.Option("train,val", help="splits to ship (the test split stays here by default)"),
    max_mb: float = typer.Option(45.0, help="largest shard in MiB"),
    quality: int = typer.Option(90, min=50, max=100, help="image quality of the shipped crops"),
    fmt: str = typer.Option("webp", "--format", help="webp (smallest) or jpeg"),
) -> None:
    """Pack a config's crop cache into size-limited image shards, to train on another machine (e.g. a GPU box)."""
    from ..config.train import ConfigError, load_config
    from ..data.shards import pack_training_data
    from ..models import get_model_cfg

    console, fail = _ui()
    try:
        cfg = load_config(config, overrides or [])
        s = pack_training_data(cfg, get_model_cfg(cfg.model.name).input_size[-1], out,
                               tuple(x for x in splits.split(",") if x), max_mb, quality, fmt)
    except (ConfigError, OSError, ValueError) as e:
        fail(str(e))
    console.print(f"packed {s['shipped']} of {s['n']} crops ({', '.join(s['splits'])}) into {len(s['shards'])} "
                  f"shards under {out}/shards ({fmt} q{quality}, mean abs pixel error {s['mean_abs_pixel_error']:.2f})")
    console.print(f"there: agekit data unpack {out}/shards --config {s['config']}; agekit train {s['config']}",
                  soft_wrap=True, markup=False)


@data_app.command("unpack")
def unpack_cmd(
    dirs: list[Path] = typer.Argument(..., help="folders holding cache.json and shard_*.npz (any split of them)"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="default: --config's data.cache_dir, else cache"),
    config: Optional[Path] = typer.Option(None, "--config", help="store the cache under the name this config's run "
                                          "computes here (other numpy/pandas versions may hash the manifests differently)"),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="section.key=value overrides of --config"),
) -> None:
    """Rebuild a packed crop cache from its shards (`agekit data pack`)."""
    from ..config.train import ConfigError, load_config
    from ..data.shards import cache_name_for, unpack_cache
    from ..models import get_model_cfg

    console, fail = _ui()
    try:
        name = None
        if config is not None:
            cfg = load_config(config, overrides or [])
            name = cache_name_for(cfg, get_model_cfg(cfg.model.name).input_size[-1])
            cache_dir = cache_dir or Path(cfg.data.cache_dir)
        path = unpack_cache(list(dirs), cache_dir or Path("cache"), name)
    except (OSError, ValueError) as e:
        fail(str(e))
    console.print(f"unpacked {path}")


@data_app.command("aggregate-votes")
def aggregate_votes_cmd(
    votes: Path = typer.Argument(..., metavar="VOTES.csv", help="one vote per row: item, annotator, age"),
    control: Optional[Path] = typer.Option(None, "--control", "-c",
                                           help="CSV of control (honeypot) items with known ages: item, age"),
    control_column: Optional[str] = typer.Option(None, "--control-column",
                                                 help="column of VOTES.csv with the known age of honeypot items "
                                                      "[default: control_age, when the file has it]"),
    tau: str = typer.Option("auto", "--tau", help="years: w = exp(-honeypot MAE / tau); auto = half the median "
                                                   "honeypot MAE (inverse-variance weighting for the typical annotator)"),
    unscored: str = typer.Option("min", "--unscored", help="weight of annotators without enough honeypots: min "
                                                           "(lowest scored weight), median, or zero (drop them)"),
    min_control: int = typer.Option(1, "--min-control", min=1, help="honeypot votes needed to score an annotator"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="aggregated ages [default: VOTES.aggregated.csv]"),
    annotators_out: Optional[Path] = typer.Option(None, "--annotators",
                                                  help="annotator scores [default: VOTES.annotators.csv]"),
    item_col: str = typer.Option("item", "--item-col", help="item column of VOTES.csv"),
    annotator_col: str = typer.Option("annotator", "--annotator-col", help="annotator column of VOTES.csv"),
    age_col: str = typer.Option("age", "--age-col", help="vote column of VOTES.csv (years)"),
) -> None:
    """Aggregate crowd age votes: annotators weighted by their honeypot MAE, one age per item with its agreement."""
    from ..data.votes import UNSCORED_POLICIES, aggregate_votes, read_control, read_votes

    console, fail = _ui()
    if unscored not in UNSCORED_POLICIES:
        fail(f"--unscored must be one of {', '.join(UNSCORED_POLICIES)}, got {unscored!r}")
    if not votes.is_file():
        fail(f"votes file not found: {votes}")
    if control is not None and not control.is_file():
        fail(f"control file not found: {control}")
    try:
        v = read_votes(votes, item_col, annotator_col, age_col, control_column)
        known = read_control(control) if control is not None else None
        res = aggregate_votes(v, known, tau=tau, unscored=unscored, min_control=min_control)  # type: ignore[arg-type]
    except (OSError, ValueError) as e:
        fail(_message(e))
    out = out or votes.with_name(f"{votes.stem}.aggregated.csv")
    annotators_out = annotators_out or votes.with_name(f"{votes.stem}.annotators.csv")
    for path in (out, annotators_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["item", "age", "weighted_std", "votes", "effective_votes", "weight_sum", "mean", "median", "is_control",
            "control_age"]
    res.items[cols].to_csv(out, index=False, float_format="%.4g")
    res.annotators.to_csv(annotators_out, index=False, float_format="%.4g")
    _print_votes(console, res, v, {"aggregated ages": out, "annotator scores": annotators_out})


def _print_votes(console, res, votes, written: dict) -> None:
    a, it = res.annotators, res.items
    n_scored = int(a["scored"].sum())
    console.print(f"{len(votes):,} votes on {len(it):,} items ({int(it['is_control'].sum()):,} control) by "
                  f"{len(a):,} annotators ({n_scored:,} scored on honeypots); tau = {res.tau:.3g} years", highlight=False)
    t = Table("annotator", "votes", "honeypots", "honeypot MAE", "bias", "weight", title="annotators by weight",
              title_justify="left")
    ranked = a.sort_values("weight", ascending=False)
    shown = ranked if len(ranked) <= 12 else _ends(ranked, 6)
    for _, r in shown.iterrows():
        mae = "-" if not r["scored"] else f"{r['control_mae']:.2f}"
        bias = "-" if not r["scored"] else f"{r['control_bias']:+.2f}"
        t.add_row(str(r["annotator"]), f"{int(r['votes']):,}", f"{int(r['control_votes']):,}", mae, bias,
                  f"{r['weight']:.3f}")
    console.print(t)
    if len(ranked) > 12:
        console.print(f"({len(ranked) - 12} annotators in the middle not shown)", highlight=False)
    med = it["weighted_std"].median()
    console.print(f"agreement: median weighted std {med:.2f} years, median {it['votes'].median():g} votes and "
                  f"{it['effective_votes'].median():.2f} effective votes per item", highlight=False)
    for note in res.notes:
        console.print(f"note: {note}", highlight=False)
    for what, path in written.items():
        console.print(f"{what}: {path}", highlight=False)


def _ends(df, n: int):
    """The first and last ``n`` rows of ``df``."""
    import pandas as pd

    return pd.concat([df.head(n), df.tail(n)])

"""``load_runner(path)`` -> a :class:`Runner`, looked up in the format table.

The runners are not listed here: each row of the format table
(:data:`agekit.export.formats.EXPORT_FORMATS`) names its runner class, so a new format reaches
``predict``, ``eval``, parity and the benchmarks by adding one row.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from ..export.formats import EXPORT_FORMATS, ExportFormat, format_for_path, resolve, runner_formats
from .runner import ModelFileError, Runner, bundled_model_path, check_model_file

__all__ = ["load_runner", "RUNNERS", "runner_class", "file_format", "parity_tolerances"]


class _RunnerTable(Mapping[str, str]):
    """``{format name: "module:Class"}`` for the table's rows that have a runner; always the live table."""

    def __getitem__(self, name: str) -> str:
        fmt = EXPORT_FORMATS[name]
        if fmt.runner is None:
            raise KeyError(name)
        return fmt.runner

    def __iter__(self) -> Iterator[str]:
        return iter(runner_formats())

    def __len__(self) -> int:
        return len(runner_formats())

    def __repr__(self) -> str:
        return f"RUNNERS({dict(self)!r})"


RUNNERS: Mapping[str, str] = _RunnerTable()


def _row(path: Path, backend: str | None) -> ExportFormat:
    if backend is None:
        fmt = format_for_path(path)
        if fmt is None or fmt.runner is None:
            known = ", ".join(s for f in EXPORT_FORMATS.values() if f.runner for s in f.suffixes)
            raise ModelFileError(f"{path}: unknown model file type {path.suffix!r} (known: {known})")
        return fmt
    if backend not in RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(RUNNERS)}")
    return EXPORT_FORMATS[backend]


def file_format(path: str | Path) -> str | None:
    """The name of the format a model file is, by its name (``m.int8.onnx`` -> ``onnx-int8``), or None."""
    fmt = format_for_path(path)
    return fmt.name if fmt is not None else None


def parity_tolerances(backend: str) -> tuple[float, float, float]:
    """(max |age diff| years, mean |age diff| years, max |P(female) diff|) ``backend``'s files must meet against
    PyTorch (looser for int8 formats)."""
    return EXPORT_FORMATS[backend].parity_tolerances


def runner_class(fmt: ExportFormat) -> type[Runner]:
    """The runner class a table row names (imported now)."""
    assert fmt.runner is not None
    return resolve(fmt.runner)  # type: ignore[return-value]


def load_runner(model: str | Path | None = None, backend: str | None = None, device: str = "cpu",
                threads: int | None = None, cache_dir: str | Path | None = None) -> Runner:
    """A runner for ``model`` (``None``: the bundled model).

    ``backend=None`` follows the file name (``.safetensors``/``.ckpt`` -> torch, ``.onnx`` -> onnx,
    ``.int8.onnx`` -> onnx-int8, ``.tflite`` -> tflite, ...). A file of another format than ``backend`` is
    accepted when both run on the same runner (an int8 ``.onnx`` is still ONNX), or when that format's row
    converts agekit weights itself (``backend="onnx"``/``"tflite"`` on a ``.safetensors`` exports once into
    ``cache_dir``, default the user cache); otherwise the error says which backend fits the file. The
    runner's ``backend`` is the row's name (``onnx-int8`` for an int8 ONNX file).

    This loads exactly the backend asked for; the product's default choice (the fastest backend that passes
    parity, with a fallback) is :func:`agekit.inference.backend.default_runner`.
    """
    if model is None:
        model = bundled_model_path()
        if not Path(model).is_file():
            raise ModelFileError(f"model file not found: {model} (the bundled model is not installed; pass a model file)")
    path = check_model_file(model)
    fmt = _row(path, backend)
    own = format_for_path(path)
    if own is not None and own.name != fmt.name:
        if own.runner == fmt.runner:
            fmt = own  # same runner: name the file's own format (an int8 file read with backend="onnx")
        elif not (own.name == "torch" and fmt.from_torch):
            how = (f"; make one with `agekit export {path} --format {fmt.name}`" if own.name == "torch" and fmt.implemented
                   else "")
            raise ModelFileError(f"{path} is a {own.name} file; use backend={own.name!r} for it{how}")
    runner = runner_class(fmt)(path, device=device, threads=threads, cache_dir=cache_dir)
    if runner.backend != fmt.name:
        runner.backend = fmt.name  # type: ignore[misc] - one runner class serves float and int8 rows
    return runner

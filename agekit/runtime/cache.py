"""Exports made once per model file and kept in the user's cache (``--backend onnx`` on a ``.safetensors``).

The key is the sha256 of the model file's bytes (plus the agekit version, since an export is only as good
as the exporter that wrote it), so a replaced model file -- same name, new weights -- gets a new export,
and two names for the same bytes share one. Files are written under a temporary name and renamed: a
crash or a second process never leaves half a model behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..export.formats import get_format
from .runner import check_model_file

__all__ = ["default_cache_dir", "file_digest", "cache_path", "cached_export", "cache_record", "write_cache_record"]


def default_cache_dir() -> Path:
    """``AGEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/agekit``, else ``~/.cache/agekit``."""
    if os.environ.get("AGEKIT_CACHE_DIR"):
        return Path(os.environ["AGEKIT_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "agekit"


def file_digest(path: str | Path) -> str:
    """First 16 hex digits of the sha256 of the file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cache_path(weights: str | Path, fmt: str, cache_dir: str | Path | None = None) -> Path:
    """Where the ``fmt`` export of ``weights`` is (or will be) cached: ``<cache>/<fmt>/<stem>-<sha256>-v<agekit>``."""
    from .. import __version__

    weights = Path(weights)

    row = get_format(fmt)
    key = f"{weights.stem}-{file_digest(weights)}-v{__version__}"
    return Path(cache_dir or default_cache_dir()).expanduser() / row.name / f"{key}{row.suffix}"


def cached_export(weights: str | Path, fmt: str, cache_dir: str | Path | None = None,
                  export: Callable[[Path, Path], Any] | None = None) -> Path:
    """The ``fmt`` export of an agekit weights file, made on first use (``export(weights, tmp_path)``, default
    :func:`agekit.export.formats.export_model`) and reused after that."""
    weights = check_model_file(weights)
    out = cache_path(weights, fmt, cache_dir)
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = get_format(fmt).suffix
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=".tmp-", dir=out.parent)
    os.close(fd)
    try:
        if export is None:
            from ..export.formats import export_model

            export_model(weights, fmt, tmp)
        else:
            export(weights, Path(tmp))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _record_path(cached: Path) -> Path:
    return cached.with_name(cached.name + ".parity.json")


def cache_record(cached: str | Path) -> dict[str, Any] | None:
    """The parity record kept next to a cached export (:func:`write_cache_record`), or None."""
    p = _record_path(Path(cached))
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def write_cache_record(cached: str | Path, record: dict[str, Any]) -> None:
    p = _record_path(Path(cached))
    fd, tmp = tempfile.mkstemp(suffix=".json", prefix=".tmp-", dir=p.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, p)

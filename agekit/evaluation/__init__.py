"""Evaluation: metrics with bootstrap CIs, scoring a model on a split, and the report it writes.

Heavier pieces load lazily so that training, which only needs :mod:`.metrics`, stays cheap to import.
"""
from __future__ import annotations

__all__ = ["evaluate", "summarize", "write_report", "EvalResult", "load_runner"]


def __getattr__(name: str):
    if name in ("evaluate", "summarize", "EvalResult"):
        from . import evaluate as _ev

        return getattr(_ev, name)
    if name == "write_report":
        from .report import write_report

        return write_report
    if name == "load_runner":
        from .runners import load_runner

        return load_runner
    raise AttributeError(name)

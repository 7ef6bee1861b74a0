"""Evaluation: metrics with bootstrap CIs, scoring a model on a split, and the report it writes.

Heavier pieces load lazily so that training, which only needs :mod:`.metrics`, stays cheap to import.
"""
from __future__ import annotations

__all__ = ["evaluate", "summarize", "write_report", "EvalResult", "check_parity", "parity_inputs"]


def __getattr__(name: str):
    if name in ("evaluate", "summarize", "EvalResult"):
        from . import evaluate as _ev

        return getattr(_ev, name)
    if name == "write_report":
        from .report import write_report

        return write_report
    if name in ("check_parity", "parity_inputs"):
        from . import parity

        return getattr(parity, name)
    raise AttributeError(name)

"""A plain `pip install .` works: every module imports without the test extras, every third-party import is a
declared dependency, the LICENSE the README names is there, and LDS needs no scipy."""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from agekit.data.lds import lds_weights

REPO = Path(__file__).resolve().parents[1]
# pulled in by the test extra, not by `pip install .` -- except scipy, which the video tracker (trackers) now brings;
# agekit's own modules must still import without it (LDS is numpy-only; the tracker is imported when a video runs)
TEST_ONLY = ("pytest", "_pytest", "skimage", "scipy")

_IMPORT_ALL = f"""
import importlib, pkgutil, re, sys

BLOCKED = {TEST_ONLY!r}
BLOCKED_DISTS = {{"pytest", "scikit-image", "scipy"}}


class Hide:
    '''As if the test-only packages were never installed: every finder answers None for them (so probes such as
    importlib.util.find_spec say "absent" and `import` raises ModuleNotFoundError), and their metadata is gone.'''

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or not hasattr(self.inner, "find_spec"):
            return None
        return self.inner.find_spec(name, path, target)

    def find_distributions(self, *args, **kwargs):
        found = getattr(self.inner, "find_distributions", lambda *a, **k: [])(*args, **kwargs)
        return [d for d in found if re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "")).lower() not in BLOCKED_DISTS]

    def __getattr__(self, name):
        return getattr(self.inner, name)


sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
import agekit

failed = []
for m in pkgutil.walk_packages(agekit.__path__, "agekit.", onerror=lambda name: failed.append(name)):
    try:
        importlib.import_module(m.name)
    except Exception as e:  # noqa: BLE001
        failed.append(f"{{m.name}}: {{type(e).__name__}}: {{e}}")
from agekit.data.lds import lds_weights

lds_weights([1, 2, 2, 3], kind="triang", ks=4)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
print("\\n".join(failed + [f"imported a blocked package: {{n}}" for n in leaked]))
sys.exit(1 if failed or leaked else 0)
"""


def test_every_module_imports_without_test_extras():
    r = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"modules that need a test-only package:\n{r.stdout}{r.stderr[-2000:]}"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """top-level import name -> [(file:line, at module level?)] for every non-stdlib, non-agekit import."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted((REPO / "agekit").rglob("*.py")):
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root == "agekit" or root in sys.stdlib_module_names:
                    continue
                out.setdefault(root, []).append((f"{path.relative_to(REPO)}:{node.lineno}", id(node) in top))
    return out


def _dist_names(reqs) -> set[str]:
    return {_norm(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0]) for d in reqs}


def test_every_third_party_import_is_declared():
    """Module-level imports come from [project] dependencies; the TFLite exporter's (imported inside functions)
    may also come from the `mobile` extra or [tool.agekit] mobile-no-deps, which scripts/setup.sh installs."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    declared = _dist_names(project["dependencies"])
    mobile = _dist_names(project["optional-dependencies"]["mobile"]) | _dist_names(pyproject["tool"]["agekit"]["mobile-no-deps"])
    dists = md.packages_distributions()
    problems = []
    for name, where in sorted(_third_party_imports().items()):
        owners = dists.get(name)
        eager = [w for w, top in where if top]
        if owners is None:  # not installed here: an optional backend, so only ever imported lazily
            if eager:
                problems.append(f"{name} (not installed) is imported at module level: {', '.join(eager)}")
        elif not any(_norm(d) in declared for d in owners):
            if any(_norm(d) in mobile for d in owners) and not eager:
                continue
            problems.append(f"{name} (from {', '.join(owners)}) is not in [project] dependencies: "
                            f"{', '.join(w for w, _ in where[:3])}")
    assert not problems, "\n".join(problems)


def test_setup_installs_the_mobile_toolchain():
    """The README's setup gets litert-torch: the extra, then the --no-deps packages named in pyproject."""
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert '".[test,mobile]"' in setup and "--no-deps" in setup and "mobile-no-deps" in setup
    pins = {_norm(line.split("==")[0]) for line in (REPO / "constraints.txt").read_text().splitlines() if "==" in line}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for dist in pyproject["tool"]["agekit"]["mobile-no-deps"] + ["ai-edge-litert"]:
        assert _norm(dist) in pins, f"{dist} is not pinned in constraints.txt"


def test_license_file_is_the_apache_2_text():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS AND CONDITIONS" in text
    assert len(text.split()) > 1500  # the full text, not a pointer to it
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"


# -- LDS without scipy ---------------------------------------------------------------------------------

def test_lds_weights_by_hand():
    # inverse clips every bin's count to >= 5 before smoothing: rare ages weigh at most 1/5
    w = lds_weights(np.array([3] * 10 + [50]), ks=1, reweight="inverse")
    raw = np.array([1 / 10] * 10 + [1 / 5])
    np.testing.assert_allclose(w, raw * 11 / raw.sum(), rtol=1e-6)
    # ks=1: no smoothing; sqrt_inv: weight 1/sqrt(count), scaled to mean 1
    w = lds_weights(np.array([0, 0, 0, 0, 1]), ks=1, reweight="sqrt_inv")
    raw = np.array([1 / 2] * 4 + [1.0])
    np.testing.assert_allclose(w, raw * 5 / raw.sum(), rtol=1e-6)
    # triang ks=3 is [0.5, 1, 0.5]; sqrt counts (0: 1, 1: 2, 2: 1, rest 0), zero-padded at age 0
    # smoothed: bin0 1 + 0.5 * 2 = 2, bin1 0.5 + 2 + 0.5 = 3, bin2 0.5 * 2 + 1 = 2
    ages = np.array([0, 1, 1, 1, 1, 2])
    w = lds_weights(ages, kind="triang", ks=3, reweight="sqrt_inv")
    raw = 1 / np.array([2, 3, 3, 3, 3, 2])
    np.testing.assert_allclose(w, raw * 6 / raw.sum(), rtol=1e-6)


def _scipy_reference(ages, kind, ks, sigma, reweight, max_age=120):
    """The previous scipy implementation, verbatim."""
    from scipy.ndimage import convolve1d
    from scipy.signal.windows import triang

    half = (ks - 1) // 2
    x = np.arange(-half, half + 1, dtype=np.float64)
    k = {"gaussian": lambda: np.exp(-(x**2) / (2 * sigma**2)), "triang": lambda: triang(ks),
         "laplace": lambda: np.exp(-np.abs(x) / sigma)}[kind]()
    k = k / k.max()
    bins = np.clip(np.round(np.asarray(ages, np.float64)).astype(int), 0, max_age)
    counts = np.bincount(bins, minlength=max_age + 1).astype(np.float64)
    counts = np.sqrt(counts) if reweight == "sqrt_inv" else np.clip(counts, 5, 1000)
    smoothed = convolve1d(counts, k, mode="constant")
    w = 1.0 / np.maximum(smoothed[bins], 1e-6)
    return (w * len(w) / w.sum()).astype(np.float32)


@pytest.mark.parametrize("kind", ["gaussian", "triang", "laplace"])
@pytest.mark.parametrize("ks", [1, 4, 5, 8])
@pytest.mark.parametrize("reweight", ["sqrt_inv", "inverse"])
def test_lds_weights_equal_the_scipy_version(kind, ks, reweight):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    ages = np.concatenate([rng.gamma(4, 8, 400), [0, 0.4, 119.6, 130, 70.5]])  # skewed, edges, clipped
    for sigma in (1.0, 2.0):
        np.testing.assert_allclose(lds_weights(ages, kind, ks, sigma, reweight=reweight),
                                   _scipy_reference(ages, kind, ks, sigma, reweight), rtol=1e-6, atol=1e-6)

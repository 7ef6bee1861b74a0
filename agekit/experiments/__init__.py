"""Research workflows: experiment grids (mean ± std tables over seeds), run-time estimates, attention maps."""
from .grid import GridSpec, expand_grid, load_grid, run_grid

__all__ = ["GridSpec", "expand_grid", "load_grid", "run_grid"]

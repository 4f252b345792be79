"""proxscope: model-based deep learning for biomedical imaging.

Networks whose layers are iterations of a known optimization algorithm (ISTA, FISTA, APG,
primal-dual TV), or that contain an optimization problem as a layer, trained end to end.

``import proxscope`` is deliberately light: torch and friends are imported by the submodules
that need them (``proxscope.operators``, ``proxscope.solvers``, ...).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

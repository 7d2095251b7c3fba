"""Dynamic attention pruning: HDP (integer golden model), baselines, model installation, kernels.

`install(model, method, **opts)`, `uninstall(model)` and `collect_masks(loaded, inputs, method,
**opts)` live in `sparsa.attention.install`; they are bound here (after that submodule is
imported, so the package attribute `install` is the function, not the module).
"""

from __future__ import annotations

from sparsa.attention.install import collect_masks, install, uninstall

__all__ = ["install", "uninstall", "collect_masks"]

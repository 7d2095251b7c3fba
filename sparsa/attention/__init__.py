"""Dynamic attention pruning: HDP (integer golden model), baselines, model installation, kernels.

`install(model, method, **opts)` / `uninstall(model)` / `collect_masks(loaded, inputs, method, **opts)`
are imported lazily so that `import sparsa.attention` stays light.
"""

from __future__ import annotations


def install(model, method: str = "hdp", **opts):
    from sparsa.attention.install import install as _install

    return _install(model, method, **opts)


def uninstall(model):
    from sparsa.attention.install import uninstall as _uninstall

    return _uninstall(model)


def collect_masks(loaded, inputs, method: str = "hdp", **opts):
    from sparsa.attention.install import collect_masks as _collect

    return _collect(loaded, inputs, method, **opts)


__all__ = ["install", "uninstall", "collect_masks"]

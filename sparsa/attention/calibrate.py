"""Head-pruning calibration: τ_H for a requested head-pruning ratio (docs/algorithms.md §5.1 step 6, CHOICE).

The seed gives τ_H as an absolute integer threshold on θ_H = Σ|A| of a head. An absolute number
means nothing to a user, so sparsa calibrates it: run the model with head pruning off over a
calibration set, pool θ_H over every layer, head and input (θ_H / N_valid² with
`tau_mode="mean"`), and return the `ratio`-quantile: at most round(ratio·n) of the n pooled
heads fall below it (ties and the 1/256 step of the "mean" comparison can only make it fewer).
Installing the method with that τ_H then prunes about `ratio` of the heads of data like the
calibration set; not exactly, because once early layers lose heads, later layers see other
inputs and their θ_H shift (the tiny-BERT test sees ≤ 0.1 off).

    tau = calibrate_tau_h(loaded, "corpus", 0.15)              # text: sentences of the calib split
    install(loaded.model, "hdp", tau_h=tau)
"""

from __future__ import annotations

import math

import torch

from sparsa.errors import SparsaError, check_fraction


def _batches(loaded, data, batch_size: int):
    """Model-input dicts for `data`: None (the family's calibration split), a data set name/path
    (its calib split), a list of sentences, an image/video tensor, or input dict(s)."""
    if isinstance(data, dict):
        yield data
        return
    if isinstance(data, (list, tuple)) and data and all(isinstance(d, dict) for d in data):
        yield from data
        return
    modality = getattr(getattr(loaded, "adapter", None), "modality", None)
    if data is None or isinstance(data, str):
        from sparsa.data import load_dataset

        if data is None and modality == "text":
            from sparsa.attention.evaluate import _calib_texts

            data = _calib_texts()
        else:
            name = data or ("clips" if modality == "video" else "digits")
            ds = load_dataset(name, split="calib", model=loaded)
            data = list(ds.texts) if ds.kind == "text" else ds.x
    if isinstance(data, (list, tuple)):
        tok = getattr(loaded, "tokenizer", None)
        if tok is None or not all(isinstance(t, str) for t in data):
            raise SparsaError("sentences were given but this model has no tokenizer",
                              hint="give image/video tensors or model-input dicts instead")
        for i in range(0, len(data), batch_size):
            yield dict(tok(list(data[i:i + batch_size]), padding=True, truncation=True, return_tensors="pt"))
        return
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield {"pixel_values": data[i:i + batch_size]}
        return
    raise SparsaError(f"cannot calibrate on data of type {type(data).__name__}",
                      hint="give a data set name/path, a list of sentences, a tensor of images, or input dicts")


def head_importances(loaded, data=None, method: str = "hdp", batch_size: int = 16, **cfg) -> torch.Tensor:
    """θ_H of every (layer, input, head) on `data`, pooled into one float64 vector (θ_H / N_valid²
    when cfg's tau_mode is "mean"), with head pruning off."""
    from sparsa.attention.install import install, uninstall
    from sparsa.attention.methods import make_config

    if method not in ("hdp", "hdp-seed"):
        raise SparsaError(f"τ_H calibration applies to hdp / hdp-seed, not {method!r}",
                          hint="SpAtten's head pruning takes a ratio directly")
    cfg.pop("tau_h", None)
    mode = make_config(method, **cfg).tau_mode
    model = (loaded if isinstance(loaded, torch.nn.Module) else getattr(loaded, "model", loaded))
    ctrl = install(model, method, keep_masks=True, tau_h=None, **cfg)
    pooled = []
    try:
        with torch.no_grad():
            for inputs in _batches(loaded, data, batch_size):
                model(**inputs)
                for st in ctrl.last_stats:
                    th = st.head_importance.to(torch.float64)  # [B, H]
                    if mode == "mean":
                        th = th / st.valid_len.to(torch.float64)[:, None].clamp(min=1) ** 2
                    pooled.append(th.reshape(-1))
    finally:
        uninstall(model)
    if not pooled:
        raise SparsaError("the calibration data produced no attention calls", hint="give at least one input")
    return torch.cat(pooled)


def calibrate_tau_h(loaded, data=None, ratio: float = 0.15, method: str = "hdp", **cfg) -> float:
    """τ_H such that `ratio` of the heads (pooled over layers, heads and calibration inputs) fall
    below it and are pruned. `cfg`: the HDPConfig options the model will run with (rho_b, block,
    tau_mode, ...); τ_H is in the units of cfg's tau_mode (integer θ_H, or θ_H / N_valid²)."""
    from sparsa.attention.methods import make_config

    check_fraction("ratio", float(ratio))
    mode = make_config(method, **{k: v for k, v in cfg.items() if k != "tau_h"}).tau_mode
    theta = head_importances(loaded, data, method, **cfg).sort().values
    k = min(int(round(ratio * theta.numel())), theta.numel() - 1)
    if k == 0:
        return 0.0  # θ_H ≥ 0 always: nothing pruned
    t = float(theta[k])  # heads with θ_H < t (at most k of them) are pruned, the rest kept
    if mode == "mean":  # head_keep compares 256·θ_H ≥ round(256·τ_H)·N²: stay on the 1/256 grid
        return math.floor(256 * t) / 256
    return t  # integer θ_H: head_keep keeps θ_H ≥ ceil(τ_H) = t


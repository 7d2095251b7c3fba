"""`evaluate_attention`: quality and achieved sparsity of a dynamic attention method on a real model.

Text models (BERT-layout encoders, DistilBERT): mean-pooled embedding cosine against the dense model on held-out
sentences (default `sparsa.data.text.EVAL_SENTENCES`; `data` may be a data set name or a text
file, one sentence per line). Classifiers (ViT, Swin, VideoMAE): top-1 accuracy of the pruned and
the dense model on the test split (default `digits` / `clips`). `sparsity=` calibrates the
method's knob (ρ_B, gap, ratio) by bisection on *calibration* data (the corpus' calib split or the
data set's calib split), never on the evaluation data.
"""

from __future__ import annotations

import torch

from sparsa.attention.install import SUPPORTED_FAMILIES, install, uninstall
from sparsa.attention.methods import KNOB_INCREASING, KNOB_RANGE, check_method, knob_for, make_config
from sparsa.errors import SparsaError, check_fraction


def _texts(data) -> list[str]:
    if data is None:
        from sparsa.data.text import EVAL_SENTENCES

        return list(EVAL_SENTENCES)
    if isinstance(data, (list, tuple)):
        return [str(t) for t in data]
    from sparsa.data import load_dataset

    ds = load_dataset(data, split="test")
    if ds.kind != "text":
        raise SparsaError(f"data set {data!r} is {ds.kind}, but this model takes text",
                          hint="give a text file with one sentence per line, or omit --data")
    return list(ds.texts)


def _calib_texts(n: int = 48) -> list[str]:
    try:
        from sparsa.data import load_dataset

        texts = list(load_dataset("corpus", split="calib").texts)
    except Exception:  # corpus unavailable: a fixed set of calibration-only sentences
        texts = [f"Calibration sentence number {i} describes how a model attends to its own input tokens."
                 for i in range(n)]
    return texts[:n]


def _image_data(loaded, data, split, limit=None):
    from sparsa.data import load_dataset

    name = data or ("clips" if loaded.adapter.modality == "video" else "digits")
    ds = load_dataset(name, split=split, model=loaded, limit=limit)
    if ds.kind == "text":
        raise SparsaError(f"data set {name!r} is text, but {loaded.family} takes images/video",
                          hint="use digits/clips or an image folder")
    return ds


def _run_text(model, tok, texts, batch_size=16):
    from sparsa.metrics.quality import embed

    return embed(model, texts, tok, batch_size=batch_size)


def _sparsity_of(ctrl) -> float:
    return ctrl.totals()["attention_sparsity"]


def calibrate(loaded, method: str, target: float, run, steps: int = 14, **opts) -> dict:
    """Bisection on the method's knob so the attention sparsity on `run()` (a callable doing the
    forward passes on calibration data) reaches `target`. Returns the opts to use."""
    knob = knob_for(method, loaded.family, **opts)
    if knob is None:
        raise SparsaError(f"method {method!r} has no sparsity knob", hint="drop --sparsity")
    if knob == "ratio":  # Top-K / SpAtten: the ratio is the target itself
        return {**opts, "ratio": target}
    lo, hi = KNOB_RANGE[knob]
    inc = KNOB_INCREASING[knob]
    model = loaded.model
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        ctrl = install(model, method, **{**opts, knob: mid})
        try:
            run()
            s = _sparsity_of(ctrl)
        finally:
            uninstall(model)
        if best is None or abs(s - target) < abs(best[1] - target):
            best = (mid, s)
        if (s < target) == inc:
            lo = mid
        else:
            hi = mid
    return {**opts, knob: round(best[0], 4)}


def evaluate_attention(loaded, method: str, *, rho_b=None, tau_h=None, sparsity=None, block=None, data=None,
                       reference=None, samples=None, **extra) -> dict:
    """Quality and achieved sparsity of `method` on `loaded` (see module docstring).

    samples: test images/clips for classifiers; default scaled by the model's MACs
    (`sparsa.metrics.budget`, counted at the emulation's cost factor).

    Returns fidelity (cosine_mean/min/p10) or accuracy (+ accuracy_dense, accuracy_loss_points),
    block_sparsity, head_sparsity, attention_sparsity, padded_to_block, the options used and
    per-layer block sparsity."""
    check_method(method)
    if loaded.family not in SUPPORTED_FAMILIES:
        raise SparsaError(f"attention pruning does not support the {loaded.family!r} family",
                          hint=f"supported: {', '.join(SUPPORTED_FAMILIES)}")
    if rho_b is not None and not -1.0 <= rho_b <= 1.0:
        raise SparsaError(f"--rho-b {rho_b} is out of range [-1, 1]",
                          hint="-1 keeps every block, 0 prunes below the row mean, 1 keeps only the row maximum")
    if rho_b is not None and method == "hdp" and knob_for(method, loaded.family, **extra) != "rho_b":
        raise SparsaError(f"--rho-b does not apply to hdp on {loaded.family}: its rule thresholds each row at a gap "
                          "below the row maximum",
                          hint="use --sparsity S to calibrate hdp's gap, or --attention hdp-seed / energon for ρ_B")
    if rho_b is not None and method in ("topk", "topk-element", "spatten", "dense", "int"):
        raise SparsaError(f"--rho-b does not apply to {method}", hint="use --sparsity for Top-K / SpAtten ratios")
    if tau_h is not None and tau_h < 0:
        raise SparsaError(f"--tau-h {tau_h} must be >= 0", hint="it is a threshold on head importance; omit to keep all heads")
    if sparsity is not None:
        check_fraction("--sparsity", sparsity)
    if block is not None and (block < 1 or block > 256):
        raise SparsaError(f"--block {block} must be in [1, 256]")
    opts = {k: v for k, v in dict(rho_b=rho_b, tau_h=tau_h, block=block, **extra).items() if v is not None}
    model = loaded.model
    model.eval()
    text = loaded.adapter.modality == "text"
    if text:
        tok = loaded.tokenizer
        texts = _texts(data)
        if not texts:
            raise SparsaError("no sentences to evaluate on", hint="the text file is empty")
        ref_model = reference.model if reference is not None else model
        with torch.no_grad():
            ref_emb = _run_text(ref_model, tok, texts)
        if sparsity is not None and method not in ("dense", "int"):
            calib = _calib_texts()
            opts = calibrate(loaded, method, sparsity, lambda: _run_text(model, tok, calib), **opts)
        ctrl = install(model, method, **opts)
        try:
            with torch.no_grad():
                emb = _run_text(model, tok, texts)
        finally:
            uninstall(model)
        from sparsa.metrics.quality import cosine_stats

        quality = {**cosine_stats(torch.nn.functional.cosine_similarity(emb, ref_emb, dim=-1)), "n_texts": len(texts)}
    else:
        from sparsa.metrics import budget
        from sparsa.metrics.quality import NoClassifierHead, cosine_summary, predict_logits, predict_outputs

        macs = budget.macs_per_sample(reference if reference is not None else loaded)
        factor = 1 if method == "dense" else budget.EMULATION_FACTOR
        n = samples or budget.eval_samples(macs, factor=factor)
        ds = _image_data(loaded, data, "test", limit=n)
        bs = budget.batch_size(macs)
        show = budget.wants_progress(macs * factor * len(ds))
        ref_model = reference if reference is not None else loaded
        predict = predict_logits
        with torch.no_grad():
            try:
                ref_logits = predict(ref_model, ds.x, bs, progress="dense reference" if show else None)
            except NoClassifierHead:  # a backbone: its outputs under the method against the dense outputs
                predict = predict_outputs
                ref_logits = predict(ref_model, ds.x, bs, progress="dense reference" if show else None)
        if sparsity is not None and method not in ("dense", "int"):
            cal = _image_data(loaded, data, "calib", limit=min(64, n))
            xc = cal.x
            opts = calibrate(loaded, method, sparsity, lambda: predict(loaded, xc, bs), **opts)
        ctrl = install(model, method, **opts)
        try:
            with torch.no_grad():
                logits = predict(loaded, ds.x, bs, progress=f"{method} attention" if show else None)
        finally:
            uninstall(model)
        if predict is predict_outputs:
            quality = cosine_summary(logits, ref_logits)
        else:
            acc = float((logits.argmax(-1) == ds.y).float().mean())
            acc_d = float((ref_logits.argmax(-1) == ds.y).float().mean())
            quality = {"accuracy": acc, "accuracy_dense": acc_d, "accuracy_loss_points": 100 * (acc_d - acc),
                       "top1_agreement": float((logits.argmax(-1) == ref_logits.argmax(-1)).float().mean()),
                       "n_samples": int(len(ds.y))}
    tot = ctrl.totals()
    layers = {}
    for fwd in ctrl.history:
        for st in fwd:
            d = layers.setdefault(st["layer"], [0, 0])
            d[0] += st["kept_blocks"]
            d[1] += st["valid_blocks"]
    cfg = make_config(method, loaded.family, **opts).to_dict() if method not in ("dense",) else {}
    return {
        "method": method,
        **quality,
        "block_sparsity": tot["block_sparsity"],
        "head_sparsity": tot["head_sparsity"],
        "attention_sparsity": tot["attention_sparsity"],
        "padded_to_block": tot["padded_to_block"],
        "block_size": cfg.get("block", 1),
        "options": {k: v for k, v in opts.items()},
        "config": cfg,
        "layer_block_sparsity": [1 - k / max(v, 1) for _, (k, v) in sorted(layers.items())],
    }

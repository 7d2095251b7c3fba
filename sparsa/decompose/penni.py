"""PENNI kernel decomposition (docs/algorithms.md §6).

The four steps, each a function you can call on its own:

    rec = decompose(model, basis=5)                   # docs/algorithms.md §6.1 SVD: conv -> basis kernels + coefficients
    retrain(model, train_set, epochs=20, lam=...)     # docs/algorithms.md §6.2 task loss + λ·Σ|C|, basis/coefficients alternate
    masks = prune_coefficients(model, s=1.0)          # docs/algorithms.md §6.3 C[|C| < s·std(C)] = 0 (and 1×1 conv weights)
    finetune(model, train_set, epochs=10, masks=masks)  #      pruned entries held at exactly zero
    shrink(model, example_input)                      # docs/algorithms.md §6.4 drop dead channels and bases (sparsa.decompose.shrink)

`penni(model, train_set, ...)` runs them in order and returns one record.
Every function changes the model in place and returns plain data (a record, masks).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from sparsa.decompose.layers import PENNI_LAYERS, PenniConv, PenniLinear, merge_to_dense  # noqa: F401  (re-exported)
from sparsa.errors import SparsaError, check_fraction

DEFAULT_BASIS = 5  # ref: d = 5 for 3×3 kernels; used when the kernel volume is larger than 5
DEFAULT_LINEAR_GROUP = 16  # docs/algorithms.md §6.5: segments of 16 inputs play the role of kernels
DEFAULT_LINEAR_BASIS = 4


# ---------------------------------------------------------------------------------------------- decompose


def svd_basis(kernels: Tensor, d: int) -> tuple[Tensor, Tensor]:
    """Best rank-d fit of the kernels (rows of `kernels [N, K]`): uncentered SVD (docs/algorithms.md §6.1 CHOICE).

    Returns basis [d, K] (the top right-singular vectors) and coefficients [N, d] = kernels·basisᵀ.
    d = K reproduces the kernels exactly (the basis is then a full orthonormal basis).
    """
    n, k = kernels.shape
    if not 1 <= d <= k:
        raise SparsaError(f"basis count d={d} must lie in 1..{k} (the kernel volume)",
                          hint=f"choose --basis between 1 and {k} for this layer")
    m = kernels.detach().double()
    # full_matrices only when there are fewer kernels than kernel entries, so that d = K still spans R^K
    _, _, vh = torch.linalg.svd(m, full_matrices=n < k)
    basis = vh[:d]
    return basis.to(kernels.dtype), (m @ basis.T).to(kernels.dtype)


@dataclass
class LayerNote:
    name: str
    type: str
    status: str  # "decomposed" | "skipped" | "kept" (1×1 convs: pruned as coefficients, not decomposed)
    note: str = ""
    basis: int | None = None
    kernel: list[int] | None = None
    in_channels: int | None = None
    out_channels: int | None = None
    rel_error: float | None = None  # ‖W - Ŵ‖ / ‖W‖ of the decomposition


@dataclass
class DecomposeRecord:
    method: str = "penni"
    basis: int | None = None
    layers: list[LayerNote] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def decomposed(self) -> list[str]:
        return [l.name for l in self.layers if l.status == "decomposed"]


def decompose(model: nn.Module, basis: int | dict[str, int] | None = None, *, linear: bool = False,
              linear_group: int = DEFAULT_LINEAR_GROUP, linear_basis: int = DEFAULT_LINEAR_BASIS,
              exclude: tuple[str, ...] = ()) -> DecomposeRecord:
    """Replace every Conv2d/Conv3d (and, with `linear=True`, every Linear) by its PENNI decomposition.

    basis: d for every conv layer, a {layer name: d} dict, or None for the default rule (d = 5 when the
      kernel volume exceeds 5; smaller kernels are not decomposed). An explicit d larger than a layer's
      kernel volume is an error.
    Layers that cannot be decomposed (groups > 1, non-zero padding modes) are skipped with a note in
    the record; 1×1 convolutions are kept (the reference skips them) and pruned like coefficients.
    """
    if isinstance(basis, bool) or (basis is not None and not isinstance(basis, (int, dict))):
        raise SparsaError(f"basis must be an integer, a {{layer: d}} dict or None, got {basis!r}",
                          hint="e.g. --basis 5")
    if isinstance(basis, int) and basis < 1:
        raise SparsaError(f"basis count d={basis} must be at least 1", hint="the reference uses d = 5 for 3×3 kernels")
    rec = DecomposeRecord(basis=basis if isinstance(basis, int) else None)
    replace: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if any(name == e or name.startswith(e + ".") for e in exclude):
            continue
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            note, new = _decompose_conv(name, m, basis)
        elif linear and isinstance(m, nn.Linear):
            note, new = _decompose_linear(name, m, linear_group, linear_basis)
        else:
            continue
        rec.layers.append(note)
        if new is not None:
            replace.append((name, new))
    if isinstance(basis, dict):
        unknown = set(basis) - {l.name for l in rec.layers}
        if unknown:
            raise SparsaError(f"basis given for layers that are not convolutions of this model: {sorted(unknown)}",
                              hint="name layers by their dotted path, e.g. 'features.0'")
    for name, new in replace:
        set_submodule(model, name, new)
    return rec


def _decompose_conv(name: str, m: nn.Conv2d | nn.Conv3d, basis) -> tuple[LayerNote, nn.Module | None]:
    ks = list(m.kernel_size)
    k = math.prod(ks)
    note = LayerNote(name, type(m).__name__, "skipped", kernel=ks, in_channels=m.in_channels,
                     out_channels=m.out_channels)
    if m.groups != 1:
        note.note = f"groups={m.groups}: grouped/depthwise convolutions are not decomposed"
        return note, None
    if m.padding_mode != "zeros":
        note.note = f"padding_mode={m.padding_mode!r}: only zero padding is supported"
        return note, None
    if k == 1:
        note.status, note.note = "kept", "1×1 convolution: not decomposed (ref), pruned like coefficients"
        return note, None
    d = basis.get(name) if isinstance(basis, dict) else basis
    if d is None:
        if isinstance(basis, dict):
            note.note = "no basis count given for this layer"
            return note, None
        if k <= DEFAULT_BASIS:
            note.note = f"kernel volume {k} ≤ {DEFAULT_BASIS}: nothing to save with the default basis"
            return note, None
        d = DEFAULT_BASIS
    if d > k:
        raise SparsaError(f"layer {name!r}: basis count d={d} is larger than its kernel volume {k} ({'×'.join(map(str, ks))})",
                          hint=f"choose --basis ≤ {k}, or exclude this layer")
    w = m.weight.detach()
    bs, c = svd_basis(w.reshape(-1, k), d)
    new = PenniConv(m.in_channels, m.out_channels, tuple(ks), d, m.stride, m.padding, m.dilation,
                    bias=m.bias is not None).to(w.device, w.dtype)
    with torch.no_grad():
        new.basis.copy_(bs)
        new.coefs.copy_(c.reshape(m.out_channels, m.in_channels, d))
        if m.bias is not None:
            new.bias.copy_(m.bias)
    note.status, note.basis = "decomposed", d
    note.rel_error = _rel_err(w, new.dense_weight())
    return note, new


def _decompose_linear(name: str, m: nn.Linear, group: int, d: int) -> tuple[LayerNote, nn.Module | None]:
    note = LayerNote(name, "Linear", "skipped", kernel=[group], in_channels=m.in_features, out_channels=m.out_features)
    if m.in_features % group:
        note.note = f"in_features={m.in_features} is not a multiple of the segment length {group}"
        return note, None
    if d > group:
        raise SparsaError(f"layer {name!r}: basis count d={d} is larger than the segment length {group}",
                          hint=f"choose a linear basis ≤ {group}")
    w = m.weight.detach()
    bs, c = svd_basis(w.reshape(-1, group), d)
    new = PenniLinear(m.in_features, m.out_features, group, d, bias=m.bias is not None).to(w.device, w.dtype)
    with torch.no_grad():
        new.basis.copy_(bs)
        new.coefs.copy_(c.reshape(m.out_features, m.in_features // group, d))
        if m.bias is not None:
            new.bias.copy_(m.bias)
    note.status, note.basis = "decomposed", d
    note.rel_error = _rel_err(w, new.dense_weight())
    return note, new


def _rel_err(w: Tensor, w_hat: Tensor) -> float:
    w, w_hat = w.detach(), w_hat.detach()
    n = float(w.norm())
    return float((w - w_hat).norm()) / n if n > 0 else 0.0


# ---------------------------------------------------------------------------------------------- regularise / prune


def coefficient_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The tensors PENNI regularises and prunes: every decomposed layer's coefficients and every 1×1
    (groups=1) convolution's weight, by parameter name."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, PENNI_LAYERS):
            out[_join(name, "coefs")] = m.coefs
        elif isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.groups == 1 and math.prod(m.kernel_size) == 1:
            out[_join(name, "weight")] = m.weight
    return out


def l1_penalty(model: nn.Module) -> Tensor:
    """Σ_layers Σ|C| (plain sum, docs/algorithms.md §6.2)."""
    ts = list(coefficient_tensors(model).values())
    if not ts:
        raise SparsaError("the model has no decomposed layers or 1×1 convolutions to regularise",
                          hint="run decompose() first")
    return sum(t.abs().sum() for t in ts)


def prune_coefficients(model: nn.Module, s: float = 1.0) -> dict[str, Tensor]:
    """Per layer, zero every coefficient with |C| < s·std(C) (population std, strict, docs/algorithms.md §6.3).

    Returns {parameter name: bool keep-mask}; the masks hold pruned entries at zero during finetune().
    """
    if not s >= 0 or not math.isfinite(s):
        raise SparsaError(f"threshold scale s={s} must be a non-negative number", hint="the reference uses s = 1.0")
    masks = {}
    with torch.no_grad():
        for name, t in coefficient_tensors(model).items():
            thr = s * float(t.std(unbiased=False))
            keep = t.abs() >= thr
            t.mul_(keep)
            masks[name] = keep
    return masks


def coefficient_sparsity(model: nn.Module) -> dict:
    """Zero fraction of the coefficients (decomposed layers) and of 1×1 conv weights."""
    nz = tot = 0
    per = {}
    for name, t in coefficient_tensors(model).items():
        z = int((t == 0).sum())
        per[name] = z / max(1, t.numel())
        nz += z
        tot += t.numel()
    return {"sparsity": nz / max(1, tot), "zeros": nz, "total": tot, "per_layer": per}


# ---------------------------------------------------------------------------------------------- training


def retrain(model: nn.Module, train, *, epochs: int = 20, lam: float = 1e-4, lr: float = 0.01,
            batch_size: int = 64, alternate: bool = True, seed: int = 0, log=None, penalty: str = "l1") -> list[dict]:
    """Task loss + λ·Σ|C| (docs/algorithms.md §6.2), SGD (momentum 0.9, Nesterov, weight decay 1e-4), lr ×0.1 at 50% and 75%.

    alternate: ref's schedule: epoch 0 trains the coefficients (basis frozen), then the roles swap at the
    start of every epoch e with (e+1) mod 2 = 0 (epochs 1-2 basis, 3-4 coefficients, ...). The other
    parameters (BatchNorm, classifier, 1×1 convs) always train.

    penalty: "l1" (the seed's λ·Σ|C|) or "group" (λ·group lasso on per-channel coefficient slices + L1
    on BatchNorm γ, `sparsa.decompose.groups.group_penalty`: whole channels die, see docs/penni.md).
    """
    if lam < 0:
        raise SparsaError(f"lam={lam} must be non-negative", hint="the reference uses 1e-4")
    pen = _penalty_fn(penalty)
    return _train(model, train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, lam=lam,
                  phase=_alternating_phase if alternate else None, masks={}, log=log, penalty=pen)


PENALTIES = ("l1", "group")


def _penalty_fn(penalty: str):
    if penalty == "l1":
        return l1_penalty
    if penalty == "group":
        from sparsa.decompose.groups import group_penalty

        return group_penalty
    raise SparsaError(f"unknown sparsity penalty {penalty!r}", hint=f"use one of {', '.join(PENALTIES)}")


def finetune(model: nn.Module, train, *, epochs: int = 10, lr: float = 0.01, batch_size: int = 64,
             masks: dict[str, Tensor] | None = None, seed: int = 1, log=None) -> list[dict]:
    """Fine-tune with pruned entries held at exactly zero (gradient masked, mask re-applied each step)."""
    return _train(model, train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, lam=0.0, phase=None,
                  masks=masks or {}, log=log)


def _alternating_phase(epoch: int) -> str:
    return "coefs" if ((epoch + 1) // 2) % 2 == 0 else "basis"


def _train(model, train, *, epochs, lr, batch_size, seed, lam, phase, masks, log, penalty=l1_penalty) -> list[dict]:
    x, y = _xy(train)
    if epochs < 0 or batch_size < 1:
        raise SparsaError(f"epochs={epochs} and batch_size={batch_size} must be non-negative / positive",
                          hint="e.g. --epochs 20")
    if epochs == 0:
        return []
    params = dict(model.named_parameters())
    opt = torch.optim.SGD([p for p in params.values() if p.requires_grad], lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(epochs * 0.5), int(epochs * 0.75)], 0.1)
    decomposed = [m for m in model.modules() if isinstance(m, PENNI_LAYERS)]
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    history = []
    was_training = model.training
    model.train()
    try:
        for epoch in range(epochs):
            if phase is not None:
                which = phase(epoch)
                for m in decomposed:
                    m.coefs.requires_grad_(which == "coefs")
                    m.basis.requires_grad_(which == "basis")
            t0, tot, n = time.perf_counter(), 0.0, 0
            for idx in torch.randperm(len(y), generator=g).split(batch_size):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(logits_of(model, x[idx]), y[idx])
                if lam > 0:
                    loss = loss + lam * penalty(model)
                loss.backward()
                for name, keep in masks.items():
                    if params[name].grad is not None:
                        params[name].grad.mul_(keep)
                opt.step()
                if masks:
                    with torch.no_grad():
                        for name, keep in masks.items():
                            params[name].mul_(keep)
                tot += float(loss.detach()) * len(idx)
                n += len(idx)
            sched.step()
            row = {"epoch": epoch, "loss": tot / max(1, n), "seconds": time.perf_counter() - t0}
            if phase is not None:
                row["phase"] = phase(epoch)
            history.append(row)
            if log is not None:
                log(row)
    finally:
        for m in decomposed:
            m.coefs.requires_grad_(True)
            m.basis.requires_grad_(True)
        model.train(was_training)
    return history


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """Class scores of a plain classifier (returns a tensor) or an HF model (returns `.logits`)."""
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def accuracy(model: nn.Module, data, batch_size: int = 256) -> float:
    """Top-1 accuracy (fraction) of `model` on a labelled dataset or an (x, y) pair."""
    x, y = _xy(data)
    was = model.training
    model.eval()
    correct = sum(int((logits_of(model, x[i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    model.train(was)
    return correct / max(1, len(y))


def _xy(data) -> tuple[Tensor, Tensor]:
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    if getattr(data, "x", None) is not None and getattr(data, "y", None) is not None:
        return data.x, data.y
    raise SparsaError("training / evaluation needs a labelled image or video dataset",
                      hint="pass sparsa.data.load_dataset('digits', split='train') or an (x, y) pair")


# ---------------------------------------------------------------------------------------------- the whole flow


@dataclass
class PenniConfig:
    """Every knob of the PENNI flow: the single home of its defaults, units and range checks.

    `sparsa decompose` builds it from its flags and a recipe's `decompose` stage from its fields, under
    the same names (tests/test_cli_recipe_names.py checks); both then call `flow.run_penni` with it.
    Ref values where the reference has one; CHOICEs documented in docs/penni.md.
    """

    basis: int | None = None  # None: d = 5 where the kernel volume exceeds 5
    linear: bool = False
    retrain_epochs: int = 20
    lam: float = 1e-4
    lr: float = 0.01
    alternate: bool = True
    # prune threshold t = s·std(C); None: 1.0 (ref) with penalty "l1", 0 with "group" (its coefficients
    # stay dense, so the std rule would cut at random)
    s: float | None = None
    # instead of s: the largest s on a grid whose pruned calibration accuracy stays within this drop,
    # a fraction (0.01 = one accuracy point), as every sparsa tolerance
    tolerance: float | None = None
    finetune_epochs: int = 10
    finetune_lr: float = 0.01
    batch_size: int = 64
    shrink: str = "safe"  # "safe" | "ref" | "none" (docs/algorithms.md §6.4)
    merge: bool = False  # fold the shrunk decomposed layers back into dense convolutions
    # with ESCALATE's hybrid quantization: fine-tuning epochs that see the 8-bit/ternary values (before
    # hybridize); `sparsa decompose --hybrid-epochs` and the recipe's hybrid quantize stage default to it
    hybrid_epochs: int = 3
    fold_bn: bool = False  # fold BatchNorm into the convs first, so the L1 penalty can kill channels
    penalty: str = "l1"  # "l1": the seed's rule; "group": group lasso + channel pruning (docs/penni.md)
    channel_s: float = 0.5  # penalty="group": drop channels scoring below channel_s × their group's mean
    channel_fraction: float | None = None  # penalty="group": instead, drop this fraction of every group
    seed: int = 0

    def __post_init__(self):
        if self.penalty not in PENALTIES:
            raise SparsaError(f"penalty={self.penalty!r} is not a sparsity penalty", hint="use 'l1' or 'group'")
        if self.shrink not in ("safe", "ref", "none"):
            raise SparsaError(f"shrink={self.shrink!r} is not a shrink mode", hint="use 'safe', 'ref' or 'none'")
        if self.s is None:
            self.s = 0.0 if self.penalty == "group" else 1.0
        # checked here, before minutes of retraining, rather than where the value is first used
        if self.channel_fraction is not None:
            check_fraction("channel_fraction", self.channel_fraction)
        if self.tolerance is not None and not 0.0 < self.tolerance < 1.0:
            raise SparsaError(f"tolerance={self.tolerance} is not an accuracy drop as a fraction in (0, 1)",
                              hint="e.g. 0.01 for one accuracy point (tolerances are fractions everywhere)")
        for name in ("lam", "s", "channel_s", "retrain_epochs", "finetune_epochs", "hybrid_epochs"):
            if not getattr(self, name) >= 0:
                raise SparsaError(f"{name}={getattr(self, name)} must be non-negative",
                                  hint=f"give {name} as a number >= 0")


def penni(model: nn.Module, train, example_input: Tensor | dict, config: PenniConfig | None = None,
          log=None) -> dict:
    """decompose -> retrain (L1) -> prune -> finetune -> shrink, in place. Returns the record."""
    from sparsa.decompose.shrink import shrink

    cfg = config or PenniConfig()
    torch.manual_seed(cfg.seed)
    folded = fold_batchnorm(model.eval()) if cfg.fold_bn else []
    rec = decompose(model, cfg.basis, linear=cfg.linear)
    if not rec.decomposed:
        raise SparsaError("no layer of this model could be decomposed",
                          hint="PENNI needs Conv2d/Conv3d layers with kernels larger than 1×1 (or --linear)")
    out = {"config": asdict(cfg), "decompose": rec.to_dict(), "folded_bn": folded}
    out["retrain"] = retrain(model, train, epochs=cfg.retrain_epochs, lam=cfg.lam, lr=cfg.lr,
                             batch_size=cfg.batch_size, alternate=cfg.alternate, seed=cfg.seed, log=log,
                             penalty=cfg.penalty)
    masks = prune_coefficients(model, cfg.s)
    if cfg.penalty == "group":
        from sparsa.decompose.groups import merge_masks, prune_channels

        ch = prune_channels(model, example_input, cfg.channel_s, cfg.channel_fraction)
        masks = merge_masks(masks, ch["masks"])
        out["channels_pruned"] = ch["removed"]
    out["pruned"] = {k: v for k, v in coefficient_sparsity(model).items() if k != "per_layer"}
    out["finetune"] = finetune(model, train, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                               batch_size=cfg.batch_size, masks=masks, seed=cfg.seed + 1, log=log)
    model.eval()
    if cfg.shrink != "none":
        out["shrink"] = shrink(model, example_input, mode=cfg.shrink)
    out["coefficient_sparsity"] = coefficient_sparsity(model)
    return out


# ---------------------------------------------------------------------------------------------- module surgery


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _join(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> list[str]:
    """Fold every BatchNorm that directly follows a Conv (or a channel concatenation of Convs) into
    those convs' weights and biases, and replace it by Identity (exact in eval mode).

    Why (CHOICE, docs/penni.md): behind a BatchNorm each output channel's weight scale is free (the
    BN renormalises it), so the L1 penalty only shrinks every row alike and no channel ever dies;
    folded, the penalty acts on the real per-channel scale and unneeded channels go to zero.
    Returns the folded BatchNorm names. Models torch.fx cannot trace are left unchanged."""
    from torch import fx

    class _Tracer(fx.Tracer):  # decomposed convs are leaves, like nn.Conv2d
        def is_leaf_module(self, m, qualname):
            return isinstance(m, PENNI_LAYERS) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception:
        return []
    users = {n: len(n.users) for n in graph.nodes}
    mods = dict(model.named_modules())

    def conv_of(node):
        if node.op == "call_module" and users[node] == 1:
            m = mods.get(node.target)
            if isinstance(m, (nn.Conv2d, nn.Conv3d, PenniConv)) and getattr(m, "groups", 1) == 1:
                return node.target
        return None

    folded = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), (nn.BatchNorm2d, nn.BatchNorm3d)):
            continue
        src = node.args[0]
        if conv_of(src):
            parts = [conv_of(src)]
        elif src.op == "call_function" and src.target in (torch.cat, torch.concat) and users[src] == 1 \
                and (src.args[1] if len(src.args) > 1 else src.kwargs.get("dim", 0)) == 1 \
                and all(conv_of(a) for a in src.args[0]):
            parts = [conv_of(a) for a in src.args[0]]
        else:
            continue
        bn = mods[node.target]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        off = 0
        for p in parts:
            c = mods[p]
            n_out = c.out_channels
            s, b = scale[off:off + n_out], shift[off:off + n_out]
            if isinstance(c, PenniConv):
                c.coefs.mul_(s.view(-1, 1, 1))
            else:
                c.weight.mul_(s.view(-1, *([1] * (c.weight.dim() - 1))))
            old_b = c.bias.detach() if c.bias is not None else torch.zeros_like(s)
            c.bias = nn.Parameter(old_b * s + b)
            off += n_out
        set_submodule(model, node.target, nn.Identity())
        folded.append(node.target)
    return folded

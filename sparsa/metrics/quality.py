"""Quality: embedding fidelity against a reference model, accuracy and logit agreement."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from sparsa.errors import SparsaError


class NoClassifierHead(SparsaError):
    """The model gives features, not class scores: accuracy does not apply (output fidelity does)."""


def _model(m):
    return (m if isinstance(m, torch.nn.Module) else getattr(m, "model", m))


@torch.no_grad()
def embed(model, texts: list[str], tokenizer, batch_size: int = 16, max_length: int = 128) -> torch.Tensor:
    """Mean-pooled (attention-mask weighted) last hidden states, as sentence-transformers pools MiniLM;
    a text classifier's class scores (logits) instead, one row per text."""
    return _text_outputs(model, texts, tokenizer, batch_size, max_length)[0]


@torch.no_grad()
def _text_outputs(model, texts, tokenizer, batch_size, max_length) -> tuple[torch.Tensor, bool]:
    """(one row per text, whether the rows are a classifier's logits)."""
    if tokenizer is None:  # checked here, not by each caller: every text path (fidelity, HDP eval) embeds
        raise SparsaError("text fidelity needs the model's tokenizer, and this model has none",
                          hint="save the model folder with its tokenizer (save_pretrained of both, or sparsa's save)")
    m = _model(model)
    outs, logits = [], False
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        out = m(**enc)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is None:  # ...ForSequenceClassification: no hidden states unless asked, its scores are its answer
            scores = getattr(out, "logits", None)
            if scores is None or scores.dim() != 2:
                raise SparsaError(f"{type(m).__name__} gives {type(out).__name__}, with neither hidden states nor "
                                  "one row of class scores per text to compare",
                                  hint="evaluate the base model (AutoModel) or a ...ForSequenceClassification")
            outs.append(scores.float())
            logits = True
            continue
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        outs.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(outs), logits


def fidelity(model, reference, texts: list[str], tokenizer, batch_size: int = 16, max_length: int = 128) -> dict:
    """Cosine similarity of pooled embeddings (a classifier's logits), model vs reference, one value per text;
    for classifiers also the share of texts whose top class agrees."""
    if not texts:
        raise SparsaError("fidelity needs at least one text", hint="give a text file with one sentence per line")
    a, la = _text_outputs(model, texts, tokenizer, batch_size, max_length)
    b, lb = _text_outputs(reference, texts, tokenizer, batch_size, max_length)
    if a.shape != b.shape or la != lb:
        what = lambda t, lg: f"{'class scores' if lg else 'embeddings'} {list(t.shape[1:])} wide"  # noqa: E731
        raise SparsaError(f"the model's {what(a, la)}, the reference's {what(b, lb)}",
                          hint="compare a model with the reference it was made from")
    out = {**cosine_stats(torch.nn.functional.cosine_similarity(a, b, dim=-1)), "n_texts": len(texts)}
    if la:
        out["top1_agreement"] = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    return out


def cosine_stats(c: torch.Tensor) -> dict:
    """Mean, min and p10 of per-item cosines: every fidelity figure reports these three."""
    return {"cosine_mean": float(c.mean()), "cosine_min": float(c.min()), "cosine_p10": float(torch.quantile(c, 0.1))}


def _input_name(model) -> str:
    adapter = getattr(model, "adapter", None)
    if adapter is not None and hasattr(adapter, "input_name"):
        return adapter.input_name()
    return "pixel_values"


def shape_mismatch_error(loaded, x: torch.Tensor, cause: Exception | None = None):
    """A SparsaError when `x`'s per-sample shape differs from the input `loaded` was built for, else None.

    Used where a forward pass on user data failed, so a model/data size mismatch reads as bad input
    rather than a traceback (models that accept other sizes never get here)."""
    try:  # the model's own size: the adapter's inputs (LoadedModel.example_inputs follows a data-size override)
        adapter = getattr(loaded, "adapter", None)
        ref = (adapter or loaded).example_inputs(batch=1)[_input_name(loaded)]
    except Exception:  # no example input to compare with: let the original error through
        return None
    got, want = tuple(x.shape[1:]), tuple(ref.shape[1:])
    if got == want:
        return None
    detail = f" ({cause})" if cause is not None else ""
    video = len(want) == 4
    fix = ("--image-size / --frames (a recipe's data: image_size / frames)" if video
           else "--image-size (a recipe's data: image_size)")
    return SparsaError(f"the data's samples have shape {got} but the model takes {want}{detail}",
                       hint=f"sparsa prepares data at the model's input size unless {fix} says otherwise: drop "
                            "that option or give the model's size; tensors you pass yourself must have its shape")


@contextmanager
def size_errors_as_bad_input(loaded, x: torch.Tensor | None):
    """Inside: a forward's failure that comes from a model/data size mismatch (`shape_mismatch_error` on `x`)
    is raised as that SparsaError; any other failure as it was."""
    try:
        yield
    except (ValueError, RuntimeError) as e:
        err = shape_mismatch_error(loaded, x, e) if x is not None and not isinstance(e, SparsaError) else None
        if err is None:
            raise
        raise err from e


_BATCH_SEED = 0


def _forward(model, m, name: str | None, xb: torch.Tensor, x: torch.Tensor):
    """One batch through the model; a failure from a model/data size mismatch reads as bad input.
    Every model sees the same random numbers on a batch (the global RNG is seeded, then restored): a
    forward that draws some (ViT-MAE shuffles its patches by random noise) is then compared like for like."""
    with size_errors_as_bad_input(model, x if name else None), torch.random.fork_rng(devices=[]):
        torch.manual_seed(_BATCH_SEED)
        return m(**{name: xb}) if name else m(xb)


def _logits_of(out, model) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None:
        raise NoClassifierHead(
            f"{type(_model(model)).__name__} has no classification head: it gives features "
            f"({type(out).__name__}), not class scores, so there is no accuracy to measure",
            hint="compare its outputs with the model it was made from (sparsa eval MODEL --reference ORIGINAL), "
                 "or use a model with a classification head (e.g. ...ForImageClassification)")
    return logits


def _batched(model, x: torch.Tensor, batch_size: int, progress: str | None, take) -> torch.Tensor:
    """`take(output, batch)` for each batch of `x` through the model (LoadedModel or nn.Module), concatenated.
    progress: a label for a progress bar on stderr (None: silent; callers show one for long loops)."""
    from sparsa.metrics.batch_progress import batch_progress

    m = _model(model)
    name = _input_name(model) if hasattr(model, "adapter") else None
    outs = []
    # the first batch is one sample: a model without a classification head (NoClassifierHead) is found at
    # the cost of one sample, not of a whole batch of a full-size model
    edges = sorted({0, *range(1, len(x), batch_size), len(x)}) if len(x) else []
    with batch_progress(progress or "", len(x), enabled=progress is not None) as advance:
        for i, j in zip(edges, edges[1:]):
            xb = x[i:j]
            outs.append(take(_forward(model, m, name, xb, x), xb))
            advance(len(xb))
    return torch.cat(outs)


@torch.no_grad()
def predict_logits(model, x: torch.Tensor, batch_size: int = 64, progress: str | None = None) -> torch.Tensor:
    """Logits of a classifier (LoadedModel or nn.Module) on inputs `x`, batched. A model without a
    classification head raises `NoClassifierHead` (a SparsaError) on the first batch."""
    return _batched(model, x, batch_size, progress, lambda out, _: _logits_of(out, model))


def _first_output(out) -> torch.Tensor:
    """The model's main output (the last hidden state of a Hugging Face backbone), one row per sample."""
    if not isinstance(out, torch.Tensor):
        out = (out.to_tuple() if hasattr(out, "to_tuple") else tuple(out))[0]
    return out.flatten(1).float()


def _row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.shape != b.shape:
        raise SparsaError(f"the model's outputs are {list(a.shape[1:])} numbers per sample, the "
                          f"reference's {list(b.shape[1:])}", hint="compare a model with the reference it was made from")
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


def _output_stats(c: torch.Tensor) -> dict:
    return {**cosine_stats(c), "n_samples": len(c), "compared": "main output per sample"}


def cosine_summary(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Per-sample cosine of outputs `a` (compressed) against `b` (reference): mean, min, p10 and the count."""
    return _output_stats(_row_cosines(a, b))


@torch.no_grad()
def predict_outputs(model, x: torch.Tensor, batch_size: int = 64, progress: str | None = None) -> torch.Tensor:
    """The main output (last hidden state, flattened) of a model without a classification head, per sample."""
    return _batched(model, x, batch_size, progress, lambda out, _: _first_output(out))


@torch.no_grad()
def output_fidelity(model, reference, x: torch.Tensor, batch_size: int = 64, progress: str | None = None) -> dict:
    """Cosine of each sample's output, model vs reference (both LoadedModels), for models without a
    classification head: the whole main output (last hidden state) per sample, the two models batch by
    batch, so memory holds one batch of outputs. The per-sample counterpart of `fidelity` for images and video."""
    r, rname = _model(reference), _input_name(reference)

    def against_reference(out, xb):
        return _row_cosines(_first_output(out), _first_output(_forward(reference, r, rname, xb, x)))

    return _output_stats(_batched(model, x, batch_size, progress, against_reference))


def accuracy(model, dataset, batch_size: int = 64) -> float:
    """Top-1 accuracy on a dataset with `.x` and `.y`."""
    return top1_accuracy(predict_logits(model, dataset.x, batch_size), dataset)


def top1_accuracy(logits: torch.Tensor, dataset) -> float:
    """Top-1 accuracy of `logits` on `dataset`'s labels. A data set with more classes than the model has
    outputs (an image folder of 11 class folders for a 10-class model) has labels the model can never
    predict: its accuracy would be a meaningless number, so it is refused, naming both counts."""
    classes = getattr(dataset, "num_classes", 0) or (int(dataset.y.max()) + 1 if len(dataset.y) else 0)
    if classes > logits.shape[-1]:
        raise SparsaError(f"the data set {getattr(dataset, 'name', '')!r} has {classes} classes, but the model "
                          f"predicts {logits.shape[-1]}", hint="evaluate on the classes the model was trained on "
                          "(an image folder holds one sub-folder per class, in the order of the model's labels)")
    return float((logits.argmax(-1) == dataset.y).float().mean())


def logit_agreement(model, reference, dataset, batch_size: int = 64) -> dict:
    """How closely a compressed classifier follows its reference: top-1 agreement and logit error."""
    return agreement(predict_logits(model, dataset.x, batch_size), predict_logits(reference, dataset.x, batch_size))


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Top-1 agreement and logit error of logits `a` (compressed) against `b` (reference)."""
    if a.shape != b.shape:
        raise SparsaError(f"the model gives {a.shape[-1]} class scores, the reference {b.shape[-1]}",
                          hint="compare a classifier with the reference it was made from (same classes)")
    return {
        "top1_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "logit_mse": float(((a - b) ** 2).mean()),
        "logit_cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()),
    }

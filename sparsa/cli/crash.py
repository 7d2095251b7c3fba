"""What the CLI prints for an error nobody foresaw: one message saying where it came from and what to do,
not a traceback. A failure inside the model's own code (a transformers modeling file) is told apart from
a bug in sparsa, because its usual cause is an input size the model does not take.
`SPARSA_TRACEBACK=1` lets the exception through, traceback and all, for a bug report."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

TRACEBACK_ENV = "SPARSA_TRACEBACK"
EXIT_UNEXPECTED = 3  # 2 is a SparsaError (the user's input), 1 click's own usage errors


def wants_traceback() -> bool:
    return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def _where(frame: traceback.FrameSummary) -> str:
    parts = Path(frame.filename).parts
    for root in ("transformers", "sparsa", "torch"):  # the path from the package on: short and telling
        if root in parts:
            i = len(parts) - 1 - parts[::-1].index(root)
            return f"{'/'.join(parts[i:])}:{frame.lineno} ({frame.name})"
    return f"{Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def _in_model_code(frame: traceback.FrameSummary) -> bool:
    parts = Path(frame.filename).parts
    return "transformers" in parts and "models" in parts


def _in_sparsa(frame: traceback.FrameSummary) -> bool:
    return "sparsa" in Path(frame.filename).parts


def describe(e: BaseException) -> tuple[str, str]:
    """(message, hint) for an unexpected exception."""
    frames = traceback.extract_tb(e.__traceback__)
    what = f"{type(e).__name__}: {e}".strip().rstrip(":")
    # torch's CPU allocator raises a RuntimeError, not a MemoryError
    if isinstance(e, MemoryError) or "can't allocate memory" in str(e) or "not enough memory" in str(e):
        return (f"ran out of memory: {what}", "free memory, or work on a smaller model or batch")
    model_frames = [i for i, f in enumerate(frames) if _in_model_code(f)]
    # raised inside the model's own forward (or torch below it), with none of sparsa's code on top of it
    if model_frames and not any(_in_sparsa(f) for f in frames[model_frames[-1]:]):
        # the step of sparsa that ran the model (not a wrapper's forward around it)
        caller = [f for f in frames[:model_frames[0]] if _in_sparsa(f) and f.name != "forward"]
        step = f", run by {_where(caller[-1])}" if caller else ""
        return (f"the model's own code failed: {what} (in {_where(frames[model_frames[-1]])}{step})",
                "a model that takes only some input sizes needs them given where the command has the option "
                "(--seq-len for text, --image-size / --frames for images and video); "
                f"{TRACEBACK_ENV}=1 shows the whole traceback")
    where = f" (in {_where(frames[-1])})" if frames else ""
    return (f"internal error: {what}{where}",
            f"this is a bug in sparsa: please report it with the command line and what the same command prints "
            f"with {TRACEBACK_ENV}=1")

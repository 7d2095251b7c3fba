"""User-facing errors.

Every error a user can cause (bad input, bad recipe, missing data) is a `SparsaError`:
the message says what is wrong, `hint` says how to fix it. The CLI prints both and exits
with status 2 instead of a traceback.
"""

from __future__ import annotations


class SparsaError(ValueError):
    """An error caused by the user's input, with a hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\nHint: {hint}")


def check_fraction(name: str, value: float, *, allow_one: bool = False) -> float:
    """Validate a pruning/sparsity fraction: [0, 1) (or [0, 1] when allow_one)."""
    ok = 0.0 <= value <= 1.0 if allow_one else 0.0 <= value < 1.0
    if not ok:
        rng = "[0, 1]" if allow_one else "[0, 1)"
        raise SparsaError(
            f"{name}={value} is out of range {rng}",
            hint=f"give {name} as a fraction, e.g. 0.5 to remove half",
        )
    return float(value)

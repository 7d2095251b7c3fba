"""Checkpoint and resume of a tolerance-pruning run.

`out` becomes the pruned model's folder (like every command's --out). While the run works, every
trial and round is appended to <out>/log.jsonl (rate, params, MACs, accuracy), and its working
state lives in <out>/.run: after every accepted step the model is checkpointed (.run/ckpt-NNNN, each
folder written whole, committed by an atomic write of .run/state.json). Running again with the same
`out` resumes from the last accepted step. At the end the model folder (with result.json and
log.jsonl, without .run) replaces <out> in one step; a finished run, like a run with another
configuration or a folder of something else, is only replaced with `overwrite=True` (`--overwrite`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sparsa.errors import SparsaError
from sparsa.io import OVERWRITE_HINT, atomic_save_safetensors, atomic_write_json, is_leftover, staged_folder
from sparsa.prune.plan import ALIASES
from sparsa.prune.schedule_config import RENAMED, ScheduleConfig

STATE_VERSION = 1
WORK_DIR = ".run"  # the working state inside the output folder until the run is finished
# options added after the first runs were written: a saved run without them used these values
LEGACY_OPTS = {"accept": "point", "confidence": 0.95}


@dataclass
class RunState:
    round: int = 1
    slot_index: int = 0  # next slot to try in this round
    accepted_in_round: int = 0
    step: int = 0  # trials so far (log entries carry it)
    s: dict = field(default_factory=dict)
    s_round_start: dict = field(default_factory=dict)
    delta: dict = field(default_factory=dict)
    a0: float = 0.0
    current: str = ""  # checkpoint folder names
    round_start: str = ""
    done: bool = False
    stop_reason: str = ""
    elapsed_s: float = 0.0


def save_ckpt(out: Path, name: str, lm, masks) -> None:
    from sparsa.models.store import write_model_files

    with staged_folder(out / name, overwrite=True) as d:  # model and masks appear together
        write_model_files(lm, d)
        if masks:
            atomic_save_safetensors(d / "masks.safetensors", masks)


def load_ckpt(out: Path, name: str):
    from safetensors.torch import load_file

    from sparsa.models import load

    d = out / name
    lm = load(d)
    masks = load_file(str(d / "masks.safetensors")) if (d / "masks.safetensors").is_file() else None
    return lm, masks


def commit(out: Path, st: RunState, cfg: ScheduleConfig) -> None:
    atomic_write_json(out / "state.json", {"version": STATE_VERSION, "config": config_dict(cfg), **asdict(st)})
    keep = {st.current, st.round_start}
    for d in out.glob("ckpt-*"):
        if d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def config_dict(cfg: ScheduleConfig) -> dict:
    d = asdict(cfg)
    d["kinds"] = list(cfg.kinds or ())
    return d


class RunLog:
    """Append-only JSONL; on resume, entries after the last committed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None, callback):
        self.path = path
        self.callback = callback
        if resume_step is None:
            path.write_text("")
        else:
            keep = []
            for line in path.read_text().splitlines() if path.exists() else []:
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a crash cut short
                if e.get("step", 0) <= resume_step:
                    keep.append(line)
            path.write_text("".join(l + "\n" for l in keep))

    def __call__(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry, default=float) + "\n")
            f.flush()
        if self.callback:
            self.callback(entry)


# what a run leaves in its folder before its first commit (.run/state.json)
_RUN_FILES = (WORK_DIR, "log.jsonl")


def resumable(out: Path, cfg: ScheduleConfig, opts: dict, overwrite: bool) -> bool:
    """Check what `out` holds before any work; True: empty it and start over."""
    if not out.is_dir() or not any(out.iterdir()):
        return False
    if overwrite:
        return True
    if (out / WORK_DIR / "state.json").is_file():
        saved_state(out, cfg, opts)  # refuses another configuration
        return False
    finished = _finished_config(out)
    if finished is not None:
        _same_config(finished, cfg, opts, out)  # refuses another configuration
        raise SparsaError(f"{out} holds a finished tolerance-pruning run", hint=OVERWRITE_HINT)
    if (out / "state.json").is_file():
        raise SparsaError(f"{out} holds a tolerance-pruning run in the older layout (state.json at the top, the "
                          f"model in {out / 'model'})", hint="its model loads from model/; pass --overwrite to run "
                          "again in the current layout (the folder is the model), or choose another --out")
    started = all(p.name in _RUN_FILES or is_leftover(p.name) for p in out.iterdir())
    if started:  # a run killed before its first commit
        return True
    raise SparsaError(f"the output folder {out} already exists and is not empty (and holds no tolerance-pruning run)",
                      hint=OVERWRITE_HINT)


def _finished_config(out: Path) -> dict | None:
    """The configuration a finished run recorded in its model folder's result.json, else None."""
    from sparsa.models.store import RESULT_FILE

    if not ((out / RESULT_FILE).is_file() and (out / "sparsa.json").is_file()):
        return None
    try:
        res = json.loads((out / RESULT_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    cfg = res.get("config") if isinstance(res, dict) and res.get("stage") == "tolerance_prune" else None
    return cfg if isinstance(cfg, dict) else None


def saved_state(out: Path, cfg: ScheduleConfig, opts: dict) -> dict:
    """.run/state.json of the run in `out`, if it has `cfg`'s configuration (which it may update for
    options the saved run predates)."""
    path = out / WORK_DIR / "state.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SparsaError(f"{path} is corrupt: {e}", hint=OVERWRITE_HINT) from e
    saved["config"] = _same_config(saved.get("config"), cfg, opts, out)
    return saved


def _same_config(saved: dict | None, cfg: ScheduleConfig, opts: dict, out: Path) -> dict:
    """Refuse a saved configuration other than `cfg`'s; returns it completed with legacy defaults."""
    saved_cfg = dict(saved or {})
    for old, new in RENAMED.items():  # a run saved under an option's former name
        if old in saved_cfg and new not in saved_cfg:
            saved_cfg[new] = saved_cfg.pop(old)
    if isinstance(saved_cfg.get("importance"), str):  # saved before aliases were resolved ("l1" = "l1_group")
        saved_cfg["importance"] = ALIASES.get(saved_cfg["importance"], saved_cfg["importance"])
    for k, legacy in LEGACY_OPTS.items():  # a run saved before option k existed keeps its rule
        if k not in saved_cfg:
            saved_cfg[k] = legacy
            if getattr(cfg, k) == getattr(ScheduleConfig, k) and k not in opts:
                setattr(cfg, k, legacy)
    if saved_cfg != config_dict(cfg):
        raise SparsaError(f"{out} holds a run with a different configuration",
                          hint="use a new --out folder, or pass --overwrite to start over (the run there is deleted)")
    return saved_cfg

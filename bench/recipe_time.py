"""Time of `sparsa run` with a recipe on BERT-base, step by step, run through the CLI as a user would.

    .venv/bin/python bench/recipe_time.py [RECIPE] [--model DIR] [--keep DIR]

RECIPE: a recipe file or bundled name (default: the bundled default, whose `model:` is replaced by
BERT-base with `--set model=...`). BERT-base is the standard `transformers.BertConfig()` with random
weights and MiniLM's tokenizer (bench/quant_memory.py builds it), unless --model names a folder.
The run is one child process; the table is its results.json's per-step wall time, CPU time (user+sys
of all its threads) and peak RSS so far (ru_maxrss at the end of the step; the last row is the
command's peak), then the child's totals as the kernel counted them. On a shared host wall time is
inflated; CPU time is not. Acceptance (issue 19): the default recipe on BERT-base in <= 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
LIMIT_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default="default", help="recipe file or bundled name (default: default)")
    ap.add_argument("--model", type=Path, help="a saved model folder (default: a fresh random BERT-base)")
    ap.add_argument("--keep", type=Path, help="keep the model and the run's output in this folder")
    a = ap.parse_args()
    from quant_memory import bert_base

    from sparsa.metrics.cpu import cpu_line

    print(cpu_line())
    with tempfile.TemporaryDirectory(prefix="sparsa-recipe-time-") as tmp:
        base = a.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        model = str(a.model) if a.model else bert_base(base / "bert-base")
        out = base / "run"
        cmd = [sys.executable, "-m", "sparsa", "run", a.recipe, "--set", f"model={model}", "--out", str(out),
               "--overwrite", "--no-html"]
        print("command: python -m sparsa run", a.recipe, "--set model=MODEL --out OUT --overwrite --no-html")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            raise SystemExit(f"sparsa run failed:\n{proc.stderr[-3000:]}")
        results = json.loads((out / "results.json").read_text())
    print(f"{'step':<28} {'wall':>8} {'cpu':>8} {'peak RSS':>9}")
    for name, t in results["timing"]["steps"].items():
        peak = t.get("peak_rss_mb")
        print(f"{name:<28} {t['wall_s']:>7.1f}s {t['cpu_s']:>7.1f}s {'' if peak is None else f'{peak / 1024:.2f}GB':>9}")
    for st in results.get("stages", []):
        refit = (st.get("record") or {}).get("refit") if isinstance(st.get("record"), dict) else None
        if refit:
            print("refit:", json.dumps(refit))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_gb = after.ru_maxrss * 1024 / 1e9
    verdict = "PASS" if wall <= LIMIT_S else "FAIL"
    print(f"{'command (kernel)':<28} {wall:>7.1f}s {cpu:>7.1f}s {peak_gb:>7.2f}GB  "
          f"{verdict} (wall <= {LIMIT_S:g} s; user {after.ru_utime - before.ru_utime:.1f} s, "
          f"sys {after.ru_stime - before.ru_stime:.1f} s)")


if __name__ == "__main__":
    main()

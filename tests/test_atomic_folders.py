"""Output folders are written whole: a SIGKILL at any step of a save leaves the old folder or the
new one at --out, never a mix, and the next save into it cleans what the kill left; an existing
--out is refused without --overwrite and replaced (never merged) with it; a path that cannot be a
folder is a clear error; a recipe name never becomes a path outside runs/.

The kills are deterministic: `sparsa.io._on_step` (a test hook called at every file written and
every rename of the folder protocol) SIGKILLs the process at its k-th step, for every k."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sparsa.errors import SparsaError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file under `folder` (relative path -> bytes), or None if there is no folder."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_tree(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


# ------------------------------------------------------------------------------ the protocol itself

OLD = {"a.txt": b"old a", "old-only.txt": b"must not survive an overwrite"}
NEW = {"a.txt": b"new a", "b.bin": bytes(range(256)), "sub/c.json": b"{}"}

_SAVE = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import sparsa.io as io

    out, kill_at, exchange = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    new = {k: bytes.fromhex(v) for k, v in json.loads(sys.argv[4]).items()}
    io._use_exchange = exchange
    steps = []

    def step(label):
        steps.append(label)
        print(label, flush=True)
        if len(steps) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    io._on_step = step
    with io.staged_folder(out, overwrite=True) as d:
        for name, data in new.items():
            io.atomic_write_bytes(d / name, data)
""")


def _save_killed_at(out: Path, k: int, exchange: bool) -> subprocess.CompletedProcess:
    new = json.dumps({n: d.hex() for n, d in NEW.items()})
    return subprocess.run([sys.executable, "-c", _SAVE, str(out), str(k), "1" if exchange else "0", new],
                          env=ENV, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename-aside-fallback"])
@pytest.mark.parametrize("old", [OLD, None], ids=["overwrite", "new-folder"])
def test_sigkill_at_every_step_leaves_old_or_new_and_is_cleaned_next_time(tmp_path, exchange, old):
    from sparsa.io import check_out_dir

    dry = tmp_path / "dry" / "out"
    if old is not None:
        write_tree(dry, old)
    full = _save_killed_at(dry, 0, exchange)
    assert full.returncode == 0, full.stderr
    labels = full.stdout.splitlines()
    assert labels[-1] == ("renamed" if old is None else "removed old") and "staged" in labels
    for k in range(1, len(labels) + 1):
        parent = tmp_path / f"k{k}"
        out = parent / "out"
        parent.mkdir()
        if old is not None:
            write_tree(out, old)
        r = _save_killed_at(out, k, exchange)
        assert r.returncode == -signal.SIGKILL, (k, r.stderr)
        got = snapshot(out)
        # killed before the folder is in place: the old one; after: exactly the new one. Only the
        # fallback, killed between its two renames, leaves no folder: the next save restores the old
        assert got in (old, NEW) or (labels[k - 1] == "moved old aside" and got is None), \
            f"killed at step {k} ({labels[k - 1]}): {sorted(got or ())}"
        assert (got == NEW) == (k > labels.index("staged") + 1) or got is None
        check_out_dir(out, overwrite=True)  # what the next save into --out does first
        assert snapshot(out) == (old if got is None else got), "recovery restores the old folder"
        assert os.listdir(parent) == (["out"] if os.path.exists(out) else []), "leftovers are cleaned"


def test_failed_save_removes_its_staging_and_keeps_the_old_folder(tmp_path):
    from sparsa.io import atomic_write_bytes, staged_folder

    out = tmp_path / "out"
    write_tree(out, OLD)
    with pytest.raises(RuntimeError):
        with staged_folder(out, overwrite=True) as d:
            atomic_write_bytes(d / "a.txt", b"half")
            raise RuntimeError("the command failed half-way")
    assert snapshot(out) == OLD and os.listdir(tmp_path) == ["out"]


def test_existing_folder_refused_without_overwrite_and_replaced_with_it(tmp_path):
    from sparsa.io import atomic_write_bytes, staged_folder

    out = tmp_path / "out"
    write_tree(out, OLD)
    with pytest.raises(SparsaError, match="already exists and is not empty") as e:
        with staged_folder(out) as d:
            pass
    assert "--overwrite" in e.value.hint and snapshot(out) == OLD
    with staged_folder(out, overwrite=True) as d:
        atomic_write_bytes(d / "a.txt", b"new a")
    assert snapshot(out) == {"a.txt": b"new a"}, "replaced, not merged"
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_folder(empty) as d:  # an empty folder is not refused
        atomic_write_bytes(d / "x", b"1")
    assert snapshot(empty) == {"x": b"1"}


def test_overwrite_never_replaces_the_working_folder_or_one_above(tmp_path, monkeypatch):
    from sparsa.io import staged_folder

    work = tmp_path / "work"
    write_tree(work, OLD)
    monkeypatch.chdir(work)
    for target in (".", "..", str(work)):
        with pytest.raises(SparsaError, match="refusing to use"):
            with staged_folder(target, overwrite=True):
                pass
    assert snapshot(work) == OLD


@pytest.mark.parametrize("label,expected", [("../../x", "x"), ("/abs/path", "abs_path"), ("..", "run"), ("", "run"),
                                            ("a b/c", "a_b_c"), ("-rf", "rf"), ("default", "default"),
                                            (".hidden", "hidden"), ("x" * 300, "x" * 80)])
def test_recipe_names_become_one_safe_folder_name(label, expected):
    from sparsa.io import safe_folder_name

    assert safe_folder_name(label) == expected


# ------------------------------------------------------------------------------ a real model save

_MODEL_SAVES = textwrap.dedent("""
    import os, shutil, signal, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)  # no thread pools: this process forks
    import sparsa.io as io
    from sparsa.models import load

    root = Path(sys.argv[1])
    old, new = load("tiny-cnn"), load("tiny-cnn")
    with torch.no_grad():
        for p in new.model.parameters():
            p.mul_(2)
    new.record = {"source": "tiny-cnn", "stages": [{"stage": "doubled"}]}
    old.save(root / "ref-old")
    steps = []
    io._on_step = steps.append
    new.save(root / "ref-new")
    io._on_step = None
    n = len(steps)

    def killer(k):
        seen = []
        def step(label):
            seen.append(label)
            if len(seen) == k:
                os.kill(os.getpid(), signal.SIGKILL)
        return step

    for exchange in (True, False):
        for k in range(1, n + 1):
            out = root / f"{'x' if exchange else 'f'}{k}" / "out"
            shutil.copytree(root / "ref-old", out)
            pid = os.fork()
            if pid == 0:
                io._use_exchange = exchange
                io._on_step = killer(k)
                try:
                    new.save(out, overwrite=True)
                finally:
                    os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (exchange, k, status)
    print(n)
""")


def test_model_save_killed_at_every_step_loads_as_old_or_new(tmp_path):
    """save_model with --overwrite semantics, killed after each file and each rename (both
    protocols): the folder at --out is byte for byte the old model or the new one, and loads."""
    import torch

    from sparsa.io import check_out_dir
    from sparsa.models import load

    r = subprocess.run([sys.executable, "-c", _MODEL_SAVES, str(tmp_path)], env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    n = int(r.stdout.split()[-1])
    assert n >= 5, "config.json, model.safetensors, sparsa.json, staged, and the renames"
    old, new = snapshot(tmp_path / "ref-old"), snapshot(tmp_path / "ref-new")
    assert old != new
    weights = {"old": load(tmp_path / "ref-old").model.state_dict(), "new": load(tmp_path / "ref-new").model.state_dict()}
    seen = set()
    for prefix in ("x", "f"):
        for k in range(1, n + 1):
            out = tmp_path / f"{prefix}{k}" / "out"
            check_out_dir(out, overwrite=True)  # the next run: recovers or cleans
            got = snapshot(out)
            assert got in (old, new), f"{prefix}{k}: a mix"
            which = "old" if got == old else "new"
            seen.add(which)
            assert os.listdir(out.parent) == ["out"]
            w = load(out).model.state_dict()
            assert w.keys() == weights[which].keys() and all(torch.equal(w[key], weights[which][key]) for key in w)
    assert seen == {"old", "new"}


# ------------------------------------------------------------------------------ the commands


def _sparsa(*args):
    """(exit code, stdout, error text) of the CLI, in this process; a SparsaError is exit 2 with
    its message and hint, as `sparsa.cli.main` prints them."""
    from typer.testing import CliRunner

    import sparsa.cli  # noqa: F401  registers the command modules
    from sparsa.cli.app import app

    r = CliRunner().invoke(app, list(args))
    if isinstance(r.exception, SparsaError):
        return 2, r.stdout, f"{r.exception.message} hint: {r.exception.hint}"
    assert not (r.exception and not isinstance(r.exception, SystemExit)), r.exception
    return r.exit_code, r.stdout, r.stderr


def test_prune_refuses_an_existing_out_and_overwrite_replaces_it(tmp_path):
    from sparsa.models import load

    out = tmp_path / "m"
    rc, _, err = _sparsa("prune", "tiny-cnn", "--channels", "0.5", "--out", str(out), "--json")
    assert rc == 0, err
    first = snapshot(out)
    (out / "tokenizer.json").write_text("{}")  # stale file from some other command
    rc, _, err = _sparsa("prune", "tiny-cnn", "--channels", "0.25", "--out", str(out))
    assert rc == 2 and "already exists and is not empty" in err and "--overwrite" in err
    assert snapshot(out) == {**first, "tokenizer.json": b"{}"}, "refused: nothing touched"
    rc, _, err = _sparsa("prune", "tiny-cnn", "--channels", "0.25", "--out", str(out), "--overwrite", "--json")
    assert rc == 0, err
    assert sorted(snapshot(out)) == ["config.json", "model.safetensors", "result.json", "sparsa.json"], "replaced, never merged"
    assert load(out).describe()["channel_groups"]["conv1"] == 12  # 16 channels, a quarter pruned


def test_out_paths_that_cannot_be_folders_are_clear_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for args, msg in ((["rtl", "export", "pe", "--out", str(blocker)], "a file is in its place"),
                      (["prune", "tiny-cnn", "--channels", "0.5", "--out", str(blocker / "sub")], f"{blocker} is a file"),
                      (["quantize", "tiny-cnn", "--out", str(blocker / "sub")], f"{blocker} is a file"),
                      (["decompose", "tiny-cnn", "--out", str(blocker)], "a file is in its place")):
        rc, _, err = _sparsa(*args)
        assert rc == 2 and "cannot create the output folder" in err and msg in err and "Traceback" not in err, args


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = _sparsa("prune", "tiny-cnn", "--channels", "0.5", "--out", str(ro / "x"))
    finally:
        ro.chmod(0o700)
    assert rc == 2 and "no permission" in err and "Traceback" not in err


def test_rtl_export_replaces_not_merges(tmp_path):
    out = tmp_path / "rtl"
    assert _sparsa("rtl", "export", "pe", "--out", str(out))[0] == 0
    rc, _, err = _sparsa("rtl", "export", "softmax", "--out", str(out))
    assert rc == 2 and "--overwrite" in err
    assert _sparsa("rtl", "export", "softmax", "--out", str(out), "--overwrite")[0] == 0
    assert sorted(os.listdir(out)) == ["sparsa_softmax.v"]


_GEMM_RECIPE = "name: {name!r}\nhardware:\n  arch: systolic-32-os\n  gemm: [8, 8, 8]\n"


@pytest.mark.parametrize("name", ["../../escaped", "/ABS/escaped", "..", "a/../../b"])
def test_a_recipe_name_never_writes_outside_runs(tmp_path, monkeypatch, name):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    name = name.replace("/ABS", str(tmp_path))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_GEMM_RECIPE.format(name=name))
    before = {p for p in tmp_path.rglob("*")}
    monkeypatch.chdir(work)
    rc, _, err = _sparsa("run", str(recipe), "--json")
    assert rc == 0, err
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(p.is_relative_to(work / "runs") for p in written), sorted(map(str, written))
    (run_dir,) = (work / "runs").iterdir()
    assert sorted(os.listdir(run_dir)) == ["report.html", "results.json"]


def test_run_twice_into_one_folder_needs_overwrite(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_GEMM_RECIPE.format(name="g"))
    out = tmp_path / "out"
    assert _sparsa("run", str(recipe), "--out", str(out), "--json")[0] == 0
    (out / "stale.txt").write_text("old")
    rc, _, err = _sparsa("run", str(recipe), "--out", str(out), "--no-html")
    assert rc == 2 and "already exists" in err and "--overwrite" in err
    rc, _, err = _sparsa("run", str(recipe), "--out", str(out), "--no-html", "--overwrite", "--json")
    assert rc == 0, err
    assert sorted(os.listdir(out)) == ["results.json"]
    assert json.loads((out / "results.json").read_text())["recipe"]["name"] == "g"


def test_sweep_resumes_its_own_folder_and_refuses_another(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_GEMM_RECIPE.format(name="g"))
    grid = tmp_path / "grid.yaml"
    grid.write_text("mode: grid\nparams:\n  hardware.params.array.rows: [8, 16]\n"
                    "objectives:\n  - {metric: hardware.compressed.latency_s, goal: min}\n")
    out = tmp_path / "sweep"
    args = ("sweep", str(recipe), "--grid", str(grid), "--workers", "0", "--out", str(out), "--json")
    rc, stdout, err = _sparsa(*args)
    assert rc == 0, err
    rc, stdout, err = _sparsa(*args)  # its own folder: resumed, every point already done
    assert rc == 0 and json.loads(stdout.splitlines()[-1])["skipped"] == 2, err
    (out / "stale.txt").write_text("x")
    rc, stdout, err = _sparsa(*args, "--overwrite")  # starts over in an emptied folder
    assert rc == 0 and json.loads(stdout.splitlines()[-1])["ran"] == 2 and not (out / "stale.txt").exists(), err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    rc, _, err = _sparsa(*args[:-2], str(other), "--json")
    assert rc == 2 and "holds no sweep" in err and "--overwrite" in err
    assert os.listdir(other) == ["notes.txt"]

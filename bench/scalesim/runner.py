"""Run SCALE-Sim 3.0.0 on GEMMs; executed by `.venv-scalesim/bin/python` (never imported by sparsa).

Reads a JSON list of jobs on stdin, prints a JSON list of results on stdout. A job is
{"M","K","N","rows","cols","dataflow","sram_kb":[ifmap,filter,ofmap],"bandwidth": null|int}.
`bandwidth` null = SCALE-Sim's CALC mode (no read stalls); an int = USER mode with that many
words/cycle on every interface (ifmap, filter, ofmap).
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import time

CFG = """[general]
run_name = r

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {s0}
FilterSramSzkB: {s1}
OfmapSramSzkB: {s2}
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow: {dataflow}
Bandwidth: {bw}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {bw}
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {bw}
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: {mode}
UseRamulatorTrace: False
"""


def _csv_row(path: str) -> list[str]:
    with open(path) as f:
        return [x.strip() for x in f.read().splitlines()[1].split(",")]


def run_job(job: dict) -> dict:
    from scalesim.scale_sim import scalesim

    with tempfile.TemporaryDirectory() as d:
        bw = job.get("bandwidth")
        s0, s1, s2 = job["sram_kb"]
        cfg = CFG.format(rows=job["rows"], cols=job["cols"], s0=s0, s1=s1, s2=s2,
                         dataflow=job["dataflow"], bw=bw or 10, mode="USER" if bw else "CALC")
        paths = {n: os.path.join(d, n) for n in ("c.cfg", "t.csv", "l.csv")}
        with open(paths["c.cfg"], "w") as f:
            f.write(cfg)
        with open(paths["t.csv"], "w") as f:
            f.write(f"Layer, M, N, K,\ng, {job['M']}, {job['N']}, {job['K']},\n")
        with open(paths["l.csv"], "w") as f:
            f.write("Layer,\n")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            s = scalesim(save_disk_space=True, verbose=False, config=paths["c.cfg"],
                         topology=paths["t.csv"], layout=paths["l.csv"], input_type_gemm=True)
            s.run_scale(top_path=os.path.join(d, "out"))
        wall = time.perf_counter() - t0
        comp = _csv_row(os.path.join(d, "out", "r", "COMPUTE_REPORT.csv"))
        det = _csv_row(os.path.join(d, "out", "r", "DETAILED_ACCESS_REPORT.csv"))
    return {
        "cycles_incl_prefetch": int(float(comp[1])), "total_cycles": int(float(comp[2])),
        "stall_cycles": int(float(comp[3])), "overall_util": float(comp[4]),
        "sram_reads_ifmap": int(float(det[3])), "sram_reads_filter": int(float(det[6])),
        "sram_writes_ofmap": int(float(det[9])), "dram_reads_ifmap": int(float(det[12])),
        "dram_reads_filter": int(float(det[15])), "dram_writes_ofmap": int(float(det[18])),
        "wall_s": wall,
    }


if __name__ == "__main__":
    jobs = json.load(sys.stdin)
    json.dump([run_job(j) for j in jobs], sys.stdout)

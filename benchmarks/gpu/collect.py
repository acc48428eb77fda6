"""Folds the GPU run's per-row JSON files into one JSON and one table.

    python benchmarks/gpu/collect.py WORK_DIR --out gpu_results.json --logs logs.txt

WORK_DIR holds `run_gpu_bench.sh`'s outputs: `peak.json` (matmul_peak.py),
`sample_*.json` (sample_bench.py), `train_*.json` (train_bench.py),
`nvidia_smi.csv` and one `.log` per row. Standard library only, so it runs
in a fraction of a second between rows.
"""

import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_utils import format_table  # noqa: E402

COLUMNS = ["bench", "config", "dtype", "cfg_scale", "batch", "seconds", "images_per_s", "tokens_per_s",
           "first_s", "gflop", "tflops", "peak_tflops", "mfu", "device_peak_MB"]


def collect(work):
    result = {"device": None, "nvidia_smi": None, "peak": None, "rows": []}
    smi = os.path.join(work, "nvidia_smi.csv")
    if os.path.exists(smi):
        with open(smi) as f:
            result["nvidia_smi"] = f.read().strip()
    peak = os.path.join(work, "peak.json")
    if os.path.exists(peak):
        with open(peak) as f:
            result["peak"] = json.load(f)
        result["device"] = result["peak"].get("device")
    for path in sorted(glob.glob(os.path.join(work, "*.json"))):
        name = os.path.basename(path)[:-5]
        if name == "peak":
            continue
        with open(path) as f:
            data = json.load(f)
        result.setdefault("machine", data.get("machine"))
        for row in data.get("keras_muse", []):
            result["rows"].append({"bench": "sample", "run": name, **row, "seconds": row["seconds_per_batch"],
                                   "first_s": row["first_call_s"]})
        for row in data.get("train", []):
            result["rows"].append({"bench": "train", "run": name, **row, "seconds": row["s_per_step"],
                                   "first_s": row["first_step_s"]})
    skipped = os.path.join(work, "skipped.txt")
    if os.path.exists(skipped):
        with open(skipped) as f:
            result["skipped"] = f.read().split()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work")
    parser.add_argument("--out", required=True)
    parser.add_argument("--logs", default=None, help="concatenate the row logs into this file")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    result = collect(args.work)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    if args.logs:
        with open(args.logs, "w") as out:
            for path in sorted(glob.glob(os.path.join(args.work, "*.log"))):
                with open(path) as f:
                    out.write(f"===== {os.path.basename(path)}\n{f.read()}\n")
    if not args.quiet:
        print(f"device: {result['device']}; matmul peak TFLOP/s: {(result['peak'] or {}).get('peak_tflops')}")
        print(format_table(result["rows"], COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The instruction-count regression gate.

Runs bench/gate.cc's deterministic workload under callgrind and compares
instructions per ingested event and per snapshot entity with
bench/baseline.json: fails when either grows more than 10% over the
baseline. Instruction counts are stable where wall time is not.

    gate.py --binary build/bench/cairn_gate --build-type RelWithDebInfo
    gate.py ... --update      # record the current counts as the baseline

The baseline is for one build type and compiler (the one `make test`
uses); another build type skips (exit 77) rather than compare unlike code.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASELINE = os.path.join(ROOT, "bench/baseline.json")
TOLERANCE = 0.10
SKIP = 77


def instructions(binary, mode):
    with tempfile.TemporaryDirectory(prefix="cairn-gate-") as tmp:
        out_file = os.path.join(tmp, "callgrind.out")
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
               binary, mode, os.path.join(tmp, "store")]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"gate: {' '.join(cmd)} failed:\n{run.stderr[-2000:]}")
        counts = json.loads(run.stdout.strip().splitlines()[-1])
        text = open(out_file).read()
        m = re.search(r"^totals: (\d+)", text, re.M) or re.search(r"^summary: (\d+)", text, re.M)
        if not m:
            sys.exit("gate: no instruction total in callgrind's output")
        return int(m.group(1)), counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--build-type", required=True)
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--update", action="store_true")
    args = ap.parse_args()

    base = None
    if not args.update:
        base = json.load(open(args.baseline))
        if base["build_type"] != args.build_type:
            print(f"baseline is for {base['build_type']} builds, this is {args.build_type}: skipped")
            return SKIP
    ingest, counts = instructions(args.binary, "ingest")
    snapshot, _ = instructions(args.binary, "snapshot")
    now = {
        "ingest_instructions_per_event": round(ingest / counts["events"]),
        "snapshot_instructions_per_entity": round(snapshot / counts["entities"]),
    }
    print(json.dumps(now))
    if args.update:
        with open(args.baseline, "w") as f:
            json.dump({"build_type": args.build_type, "compiler": platform.machine() + " g++ (Debian 12)",
                       "tolerance": TOLERANCE, **now}, f, indent=2)
            f.write("\n")
        print(f"wrote {args.baseline}")
        return 0
    failed = False
    for key, value in now.items():
        ratio = value / base[key]
        verdict = "ok"
        if ratio > 1 + TOLERANCE:
            verdict = f"REGRESSION: more than {TOLERANCE:.0%} over the baseline"
            failed = True
        elif ratio < 1 - TOLERANCE:
            verdict = "improved by more than 10%: record it with --update"
        print(f"{key}: {value:,} vs baseline {base[key]:,} ({ratio:.3f}x) {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

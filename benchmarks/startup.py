"""How long the `captioner` command takes to start: --help, query --help, and stats and query over an output.

    python benchmarks/startup.py OUTPUT            # OUTPUT: a folder a run wrote, e.g. demo-out
    python benchmarks/startup.py OUTPUT --repeats 9

Prints the median wall time of each command over --repeats runs, and a JSON line.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="an output folder a run wrote (for stats and query)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    captioner = shutil.which("captioner") or sys.exit("the captioner command is not installed (pip install -e .)")
    commands = {
        "captioner --help": [captioner, "--help"],
        "captioner query --help": [captioner, "query", "--help"],
        "captioner stats OUTPUT": [captioner, "stats", args.output],
        "captioner query OUTPUT --limit 3": [captioner, "query", args.output, "--limit", "3"],
    }
    report = {name: round(median_seconds(command, args.repeats), 2) for name, command in commands.items()}
    for name, seconds in report.items():
        print(f"{name:36} {seconds:6.2f} s  (median of {args.repeats})")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

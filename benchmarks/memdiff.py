"""What grew between two memory snapshots of a server (``holo.server.memtrace``).

    python benchmarks/memdiff.py DIR/003.tracemalloc DIR/010.tracemalloc [--top 25]

Prints both snapshots' figures (resident, traced, glibc's heap), then the allocations that
grew most between them, grouped by traceback (``--group lineno`` for single lines, which
sums the same line reached by different paths).
"""

from __future__ import annotations

import argparse
import json
import tracemalloc
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", choices=("traceback", "lineno", "filename"), default="traceback")
    parser.add_argument("--frames", type=int, default=6, help="frames shown per traceback")
    args = parser.parse_args()
    for path in (args.before, args.after):
        figures = path.with_suffix(".json")
        if figures.is_file():
            shown = json.loads(figures.read_text())
            for key, value in shown.items():
                shown[key] = round(value, 1) if isinstance(value, float) else value
            print(f"{path.name}: {shown}")
    before = tracemalloc.Snapshot.load(str(args.before))
    after = tracemalloc.Snapshot.load(str(args.after))
    skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(skip), after.filter_traces(skip)
    stats = after.compare_to(before, args.group)
    total = sum(s.size_diff for s in stats)
    print(f"traced growth: {total / 2**20:+.2f} MB in {sum(s.count_diff for s in stats):+d} blocks")
    for stat in stats[: args.top]:
        print(
            f"\n{stat.size_diff / 2**20:+8.2f} MB {stat.count_diff:+8d} blocks "
            f"(now {stat.size / 2**20:.2f} MB in {stat.count} blocks)"
        )
        if args.group == "traceback":
            for line in stat.traceback.format(limit=args.frames, most_recent_first=True):
                print(f"    {line}")
        else:
            print(f"    {stat.traceback[0]}")


if __name__ == "__main__":
    main()

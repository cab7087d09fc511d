"""Run the fuzz harnesses for a fixed time each; exit 1 if any of them crashed.

    python fuzz/run.py [--seconds N] [--work DIR] [TARGET ...]

Each target gets its seeds written afresh to ``WORK/seeds/TARGET``, keeps the inputs it
finds in ``WORK/corpus/TARGET`` (so a later run with the same ``--work`` resumes) and
writes a crashing input to ``WORK/crashes/TARGET/``. ``WORK`` defaults to ``$FUZZ_WORK``
or ``fuzz/.work`` (ignored by git). One line per target: runs, runs a second, crashes.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Target:
    script: str
    max_len: int  # bytes: an input longer than any seed gains nothing but time
    timeout_s: int = 5  # one input slower than this is a hang
    rss_limit_mb: int = 2048  # libFuzzer's default: memory past it is a crash


TARGETS = {
    # Small DICOM files (the seeds are up to 48 KB): headers, then pixels through every decoder.
    "dicom": Target("fuzz_dicom.py", max_len=48 << 10),
    "glb": Target("fuzz_glb.py", max_len=8 << 10),
    "token": Target("fuzz_token.py", max_len=5 << 10),
    # Zips of a few small DICOM files (the seeds are up to 58 KB: two of the knee's slices).
    "zip": Target("fuzz_zip.py", max_len=64 << 10),
    # A method byte, a role byte and a request (the seeds are under 1 KB); one live server.
    "rpc": Target("fuzz_rpc.py", max_len=4 << 10),
    # OpenIGTLink streams and POLYDATA bodies (the seeds are under 1 KB).
    "igtl": Target("fuzz_igtl.py", max_len=4 << 10),
}


@dataclass
class Result:
    target: str
    runs: int
    seconds: float
    crashed: bool
    tail: str
    artifacts: list[Path]

    def line(self) -> str:
        rate = self.runs / self.seconds if self.seconds else 0.0
        verdict = "CRASH" if self.crashed else "ok"
        return f"{self.target}: {self.runs} runs in {self.seconds:.0f} s ({rate:.0f}/s), {verdict}"


def run_target(name: str, seconds: int, work: Path, seed: int | None = None) -> Result:
    target = TARGETS[name]
    script = HERE / target.script
    seeds, corpus, crashes = (work / kind / name for kind in ("seeds", "corpus", "crashes"))
    for folder in (seeds, corpus, crashes):
        folder.mkdir(parents=True, exist_ok=True)
    # The harness's scratch files (fuzz/common.py scratch_folder) go here, removed below
    # also when the harness crashed: libFuzzer then skips its exit handlers.
    scratch = tempfile.mkdtemp(
        prefix="holo-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HOLO_FUZZ_SCRATCH": scratch,
    }
    command = [
        sys.executable,
        str(script),
        f"-max_total_time={seconds}",
        f"-max_len={target.max_len}",
        f"-timeout={target.timeout_s}",
        f"-rss_limit_mb={target.rss_limit_mb}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        *([f"-seed={seed}"] if seed is not None else []),
        str(corpus),
        str(seeds),
    ]
    dictionary = HERE / f"{name}.dict"
    if dictionary.is_file():
        command.insert(2, f"-dict={dictionary}")
    log = work / f"{name}.log"
    try:
        subprocess.run([sys.executable, str(script), "--seeds", str(seeds)], env=env, check=True)
        started = time.monotonic()
        with open(log, "w") as out:
            code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        elapsed = time.monotonic() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    text = log.read_text(errors="replace")
    found = re.search(r"stat::number_of_executed_units:\s*(\d+)", text) or re.search(
        r"Done (\d+) runs", text
    )
    runs = int(found.group(1)) if found else 0
    artifacts = sorted(p for p in crashes.iterdir() if p.is_file())
    return Result(name, runs, elapsed, code != 0, "\n".join(text.splitlines()[-40:]), artifacts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)))
    parser.add_argument(
        "--work", type=Path, default=Path(os.environ.get("FUZZ_WORK", HERE / ".work"))
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="libFuzzer's random seed (CI fixes it: the same mutations each run)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"no target {', '.join(unknown)}; the targets are {', '.join(TARGETS)}")
    failed = False
    for name in args.targets or list(TARGETS):
        result = run_target(name, args.seconds, args.work.resolve(), args.seed)
        print(result.line(), flush=True)
        if result.crashed:
            failed = True
            print(result.tail, file=sys.stderr)
            for path in result.artifacts:
                print(f"  crashing input: {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training tokens/s with 1 and 2 threads, spinning or sleeping OpenMP waits, on idle and on busy cores.

Each run is a short ``bptt train`` in its own process (by default the quick
start's 2x256 LSTM, window 50, batch 32; ``--data`` and ``--train-flags`` pick
another, e.g. a series), so OpenMP reads its wait policy afresh:

- ``bptt``: ``python -m bptt_cli``, which sets OMP_WAIT_POLICY=PASSIVE and
  GOMP_SPINCOUNT=3000 before torch loads (a short spin, then sleep);
- ``sleep``: the same with GOMP_SPINCOUNT=0 (sleep at once), as bptt ran before;
- ``spin``: the same app, but torch imported first, so libgomp keeps its default
  (each idle thread spins for about 3 ms before it sleeps), as bptt ran before that.

The busy phase starts one busy-loop process per usable core (each ends by
itself after ``--load-seconds`` and is stopped when the benchmark ends, however
it ends). Configurations alternate, round after round; the figure is the median
over rounds of the run summary's training tokens/s, with the process's wall and
CPU time beside it.

    python benchmarks/threads.py --steps 20 --rounds 2
    python benchmarks/threads.py --data sample_data/elecdemand.csv --train-flags "--target Demand" --steps 300
    python benchmarks/threads.py --idle-only --rounds 4   # only the cost of sleeping on free cores
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "import sys, torch; from bptt_cli.cli import main; sys.argv[0] = 'bptt'; main()"  # libgomp loads first
LAUNCH = {"bptt": [sys.executable, "-m", "bptt_cli"], "sleep": [sys.executable, "-m", "bptt_cli"],
          "spin": [sys.executable, "-c", SPIN]}
POLICY_ENV = {"sleep": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}}  # bptt keeps a user's own choice
POLICIES = ("spin", "sleep", "bptt")
BUSY_LOOP = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run_once(policy: str, threads: int, train_args: list[str]) -> dict:
    """One ``bptt train``: its summary's tokens/s, and the process's wall and CPU seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(POLICY_ENV.get(policy, {}))
    command = [*LAUNCH[policy], "train", *train_args, "--threads", str(threads)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {err.decode()[-500:]}")
    summary = json.loads(out)
    return {"tokens_per_second": summary["tokens_per_second"], "wall": wall, "cpu": _last_child_cpu()}


_cpu_seen = [0.0]


def _last_child_cpu() -> float:
    """CPU seconds (user + system) of the child reaped last: the growth of this process's children total."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    spent, _cpu_seen[0] = total - _cpu_seen[0], total
    return spent


def start_load(cores: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seconds)]) for _ in range(cores)]


def stop_load(load: list[subprocess.Popen]) -> None:
    for process in load:
        process.kill()
    for process in load:
        process.wait()
    _last_child_cpu()  # the busy loops' CPU time is not a training run's


def measure(phase: str, configs: list[tuple[str, int]], rounds: int, train_args: list[str]) -> dict:
    load = os.getloadavg()[0]
    figures: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    for _ in range(rounds):
        for policy, threads in configs:
            figures[(policy, threads)].append(run_once(policy, threads, train_args))
    print(f"\n{phase} (1-minute load average at the start: {load:.2f})")
    print(f"{'wait':8s} {'threads':>7s} {'tokens/s':>9s} {'wall s':>7s} {'CPU s':>6s}   rounds (tokens/s)")
    medians = {}
    for (policy, threads), runs in figures.items():
        rate = statistics.median(r["tokens_per_second"] for r in runs)
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        medians[(policy, threads)] = rate
        rounds_text = ", ".join(f"{r['tokens_per_second']:,.0f}" for r in runs)
        print(f"{policy:8s} {threads:7d} {rate:9,.0f} {wall:7.1f} {cpu:6.1f}   {rounds_text}")
    return medians


def ratios(name: str, medians: dict) -> None:
    for policy in ("sleep", "bptt"):
        print(f"{name}: {policy}/spin at 2 threads {medians[(policy, 2)] / medians[('spin', 2)]:.2f}x, "
              f"at 1 thread {medians[(policy, 1)] / medians[('spin', 1)]:.2f}x")
    print(f"{name}: 2 threads/1 thread: " + ", ".join(
        f"{policy} {medians[(policy, 2)] / medians[(policy, 1)]:.2f}x" for policy in POLICIES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sample_data/shakespeare.txt")
    parser.add_argument("--train-flags", default="", help="more bptt train flags, e.g. \"--target Demand\"")
    parser.add_argument("--steps", type=int, default=20, help="updates per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load-seconds", type=float, default=900.0, help="the busy loops end by themselves after this")
    parser.add_argument("--idle-only", action="store_true", help="skip the busy phase; 2 threads only")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    configs = [(policy, threads) for threads in ((2,) if args.idle_only else (1, 2)) for policy in POLICIES]
    with tempfile.TemporaryDirectory() as folder:
        cache = ["--cache-dir", folder] if Path(args.data).suffix in ("", ".txt") else []  # text's token cache
        train_args = [args.data, *shlex.split(args.train_flags), "--max-steps", str(args.steps), "--val-fraction",
                      "0.02", "--json", "--quiet", *cache, "-o", f"{folder}/model.pt", "--replace", "always"]
        run_once("bptt", 1, train_args)  # builds the token cache, outside the timings
        _last_child_cpu()
        print(f"{cpu_model()}, {cores} usable cores, torch threads 1 and 2; bptt train {args.data} "
              f"{args.train_flags or '(LSTM 2x256, window 50, batch 32)'}, {args.steps} updates per run, "
              f"median of {args.rounds} rounds")
        quiet = measure("idle cores (no load of our own)", configs, args.rounds, train_args)
        if args.idle_only:
            print("\nidle: " + ", ".join(f"{policy}/spin at 2 threads {quiet[(policy, 2)] / quiet[('spin', 2)]:.2f}x"
                                        for policy in ("sleep", "bptt")))
            return
        load = start_load(cores, args.load_seconds)
        try:
            busy = measure(f"busy cores ({cores} busy-loop processes, one per core)", configs, args.rounds,
                           train_args)
        finally:
            stop_load(load)
    print()
    ratios("idle", quiet)
    ratios("busy", busy)
    print("busy/idle at 2 threads: " + ", ".join(
        f"{policy} {busy[(policy, 2)] / quiet[(policy, 2)]:.2f}x" for policy in POLICIES))


if __name__ == "__main__":
    main()

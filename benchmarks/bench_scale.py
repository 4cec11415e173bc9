"""Images per second of the audit's pass over the images on 1, 2, 4 processes (torchrun).

Each run is ``torchrun --nproc-per-node N -m reporter audit`` on the same folder of digit PNGs
and the same (untrained, the speed does not depend on it) gapnet checkpoint, in its own
process tree. The CPU cores are shared out: each of the N processes gets ``cores // N``
threads (``OMP_NUM_THREADS``), so the 1-process run uses the whole machine too; ``--threads 1``
gives every process one thread instead (the fair baseline on a machine that other jobs load:
there a process's second thread mostly waits for a core). With
``--device cuda`` each process takes one GPU (``LOCAL_RANK``) and NCCL merges.

Measured from each run's ``audit.json``: ``timings.explain`` (the stream pass: loading,
predictions, every map, the running statistics and, with N > 1, the merge on rank 0) and the
number of audited images. Printed side by side: images/s, the speed-up over 1 process and
its ratio to linear (goal >= 0.85 where the cores exist), the wall time of the whole run and
the peak memory of its largest process.

    python benchmarks/bench_scale.py [--procs 1,2,4] [--images 800] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_audit import make_folder  # noqa: E402 - the same data as bench_audit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_model(path: Path) -> Path:
    """An untrained gapnet for 10 grayscale 32x32 classes (seeded)."""
    import torch

    from reporter.models import ModelMeta, build_model, save_checkpoint

    if path.exists():
        return path
    torch.manual_seed(0)
    model = build_model("gapnet", 10, channels=1)
    meta = ModelMeta(
        arch="gapnet",
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        input_size=(32, 32),
        channels=1,
    )
    return save_checkpoint(path, model, meta)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run(procs: int, args: argparse.Namespace, data: Path, model: Path, out: Path) -> dict:
    threads = args.threads or (max(1, cores() // procs) if args.device == "cpu" else 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parent)}
    cmd = [
        "/usr/bin/time", "-f", "PEAK_RSS_KB %M",
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
        "-m", "reporter", "audit", "--quiet", "--model", str(model), "--data", str(data),
        "--methods", args.methods, "--featvis-channels", "0", "--trust-samples", "0",
        "--samples-per-class", "1", "--format", "json", "--batch-size", str(args.batch_size),
        "--device", args.device, "--out", str(out),
    ]  # fmt: skip
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"torchrun with {procs} processes failed:\n{done.stderr[-3000:]}")
    peak = [ln for ln in done.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")]
    audit = json.loads((out / "audit.json").read_text())
    images = audit["dataset"]["audited_images"]
    seconds = audit["timings"]["explain"]
    return {
        "procs": procs,
        "threads": threads,
        "images": images,
        "seconds": seconds,
        "ips": images / seconds,
        "wall": wall,
        "peak_mib": int(peak[-1].split()[1]) / 1024 if peak else float("nan"),
        "world_size": audit["environment"]["world_size"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2,4", help="process counts, comma-separated")
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--methods", default="gradcam,gradcam++,eigencam")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="--workers (default: auto)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per process (default: the cores shared out, cores // N)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one process per GPU)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-scale"))
    args = parser.parse_args()
    counts = [int(p) for p in args.procs.split(",") if p.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    data = make_folder(args.out / f"digits-{args.images}", args.images)
    model = make_model(args.out / "gapnet-untrained.pt")
    print(f"{args.images} digit PNGs, gapnet, methods {args.methods}, batch {args.batch_size}, "
          f"{args.device}, {cores()} cores")  # fmt: skip
    rows = [run(n, args, data, model, args.out / f"report-{n}") for n in counts]
    base = next((r for r in rows if r["procs"] == 1), rows[0])
    print(
        f"{'procs':>5} {'threads':>7} {'images':>6} {'pass s':>7} {'images/s':>9} "
        f"{'speed-up':>8} {'x linear':>8} {'wall s':>7} {'peak MiB':>8}"
    )
    for r in rows:
        speedup = r["ips"] / base["ips"]
        linear = speedup / (r["procs"] / base["procs"])
        print(
            f"{r['procs']:>5} {r['threads']:>7} {r['images']:>6} {r['seconds']:>7.2f} "
            f"{r['ips']:>9.1f} {speedup:>8.2f} {linear:>8.2f} {r['wall']:>7.1f} "
            f"{r['peak_mib']:>8.0f}"
        )
        assert r["world_size"] == r["procs"], r
    print(f"goal: x linear >= 0.85 for process counts up to the {cores()} cores here")


if __name__ == "__main__":
    main()

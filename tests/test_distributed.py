"""The audit on torch.distributed: the same bundle from 1, 2 and 3 processes, two torchrun
"nodes" on localhost, and a failure on one process that stops all and writes nothing.

Processes are gloo on this CPU, started with ``torch.multiprocessing`` (the run's code is
the library's; only the torchrun variables are set by hand) or with ``torchrun`` itself.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from reporter.distributed import DistEnv, Session, dist_env, merge_topk, shard
from reporter.errors import ReporterError
from tests.bundle_compare import bundle_differences, json_differences
from tests.conftest import folder_snapshot, make_image_folder

ROOT = Path(__file__).resolve().parents[1]

# Fast audit settings: an untrained 3-class gapnet on 67 small files (one unreadable), two
# methods, a little feature visualization, a small trust sample.
AUDIT = {
    "methods": ("gradcam", "eigencam"),
    "featvis_channels": 2,
    "featvis_steps": 2,
    "samples_per_class": 1,
    "trust_samples": 0,
    "top_k": 3,
    "batch_size": 8,
    "formats": ("json",),
    "quiet": True,
    "workers": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A folder of 3 x 22 PNGs plus one unreadable file, and an untrained gapnet for it."""
    from reporter.models import ModelMeta, build_model, save_checkpoint

    root = tmp_path_factory.mktemp("dist")
    data = make_image_folder(root / "data", {"cat": 22, "dog": 22, "frog": 22})
    (data / "dog" / "img_broken.png").write_bytes(b"not a png")
    torch.manual_seed(3)
    model = build_model("gapnet", 3, channels=3)
    meta = ModelMeta(
        arch="gapnet",
        num_classes=3,
        class_names=["cat", "dog", "frog"],
        input_size=(20, 20),
        channels=3,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
    )
    ckpt = save_checkpoint(root / "gapnet.pt", model, meta)
    return {"root": root, "data": data, "model": ckpt}


def _config(case: dict[str, Path], **extra: Any):
    from reporter.config import AuditConfig

    return AuditConfig(
        model=str(case["model"]), data=str(case["data"]), out="report", **{**AUDIT, **extra}
    )


def _worker(rank: int, world: int, port: int, workdir: str, config: Any, fail: str | None) -> None:
    """One process of a spawned run: the torchrun variables, then the library's run_audit.

    Writes ``rank<r>.json`` with ``{"ok": bool, "error": message, "type": class}``.
    """
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        REPORTER_DIST_TIMEOUT="120",
    )
    os.chdir(workdir)
    torch.set_num_threads(1)
    from reporter.audit import run_audit, stream

    if fail == "other-model" and rank == 1:  # as if this machine had another model.pt
        from reporter.audit import run as run_module

        run_module.weights_sha256 = lambda model: "0" * 64  # type: ignore[assignment]
    elif fail is not None and rank == 1:

        def broken(*args: Any, **kwargs: Any) -> Any:
            if fail == "interrupt":
                raise KeyboardInterrupt
            raise RuntimeError("injected failure on rank 1")

        stream._accumulate = broken  # type: ignore[assignment]
    outcome: dict[str, Any] = {"ok": True, "error": None, "type": None}
    try:
        run_audit(config)
    except BaseException as exc:  # noqa: BLE001 - recorded for the test to read
        outcome = {"ok": False, "error": str(exc), "type": type(exc).__name__}
    Path(workdir, f"rank{rank}.json").write_text(json.dumps(outcome))


def spawn_audit(workdir: Path, world: int, config: Any, fail: str | None = None) -> list[dict]:
    """Run the audit on ``world`` spawned gloo processes in ``workdir``; their outcomes."""
    import torch.multiprocessing as mp

    workdir.mkdir(parents=True, exist_ok=True)
    mp.spawn(
        _worker, args=(world, free_port(), str(workdir), config, fail), nprocs=world, join=True
    )
    return [json.loads((workdir / f"rank{r}.json").read_text()) for r in range(world)]


def in_process_audit(workdir: Path, config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from reporter.audit import run_audit

    workdir.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workdir)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    run_audit(config)


# ------------------------------------------------------------------ the same bundle


def test_same_bundle_from_1_2_and_3_processes(
    case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(case)
    in_process_audit(tmp_path / "p1", config, monkeypatch)
    one = tmp_path / "p1" / "report"
    audit = json.loads((one / "audit.json").read_text())
    # the case exercises what has to be merged: a skipped file, maps, top-k, relevance
    assert audit["environment"]["world_size"] == 1
    assert audit["dataset"]["audited_images"] == 66
    assert [s["path"].endswith("img_broken.png") for s in audit["skipped"]] == [True]
    assert audit["featvis"]["layers"], "feature visualization must be part of the comparison"
    for world in (2, 3):
        outcomes = spawn_audit(tmp_path / f"p{world}", world, config)
        assert [o["ok"] for o in outcomes] == [True] * world, outcomes
        other = tmp_path / f"p{world}" / "report"
        assert json.loads((other / "audit.json").read_text())["environment"]["world_size"] == world
        assert bundle_differences(one, other) == []
        # ranks other than 0 wrote nothing: only rank 0's bundle and the outcome files exist
        assert sorted(p.name for p in (tmp_path / f"p{world}").iterdir() if p.is_dir()) == [
            "report"
        ]


def test_two_torchrun_nodes_on_localhost(
    case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``torchrun --nnodes 2 --node-rank {0,1} --nproc-per-node 1`` as two subprocesses."""
    from click.testing import CliRunner

    from reporter.cli import cli

    port = free_port()
    argv = [
        "--model", str(case["model"]), "--data", str(case["data"]), "--max-images", "40",
        "--methods", "gradcam,eigencam", "--featvis-channels", "2", "--featvis-steps", "2",
        "--samples-per-class", "1", "--trust-samples", "0", "--top-k", "3",
        "--batch-size", "8", "--format", "json", "--quiet", "--workers", "0", "--out", "report",
    ]  # fmt: skip
    (tmp_path / "single").mkdir()
    monkeypatch.chdir(tmp_path / "single")  # the same command line, in this process
    assert CliRunner().invoke(cli, ["audit", *argv]).exit_code == 0
    work = tmp_path / "nodes"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
            "--node-rank", str(node), "--nproc-per-node", "1", "--master-addr", "127.0.0.1",
            "--master-port", str(port), "-m", "reporter", "audit", *argv,
        ]  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "Audited gapnet on 40 images" in outputs[0]
    assert "process 1 of 2" in outputs[1]
    written = work / "report"
    assert json.loads((written / "audit.json").read_text())["environment"]["world_size"] == 2
    assert bundle_differences(tmp_path / "single" / "report", written) == []


@pytest.mark.parametrize("fail", ["error", "interrupt", "other-model"])
def test_failure_on_rank_1_stops_both_and_keeps_the_old_report(
    case: dict[str, Path], tmp_path: Path, fail: str
) -> None:
    work = tmp_path / "run"
    old = work / "report"
    old.mkdir(parents=True)
    (old / "audit.json").write_text('{"old": true}')
    (old / "notes.txt").write_text("mine")
    before = folder_snapshot(old)
    outcomes = spawn_audit(work, 2, _config(case, max_images=24), fail=fail)
    assert [o["ok"] for o in outcomes] == [False, False], outcomes
    if fail == "error":
        # rank 1 keeps its own exception; rank 0 names the process, the stage and the cause
        assert outcomes[1]["type"] == "RuntimeError"
        assert outcomes[0]["type"] == "ReporterError"
        assert outcomes[0]["error"].startswith("Process 1 of 2 failed while running the stream")
        assert "RuntimeError: injected failure on rank 1" in outcomes[0]["error"]
        assert outcomes[0]["error"].endswith("Nothing was written.")
    elif fail == "interrupt":  # Ctrl-C on rank 1: rank 0 learns at its next collective
        assert outcomes[1]["type"] == "KeyboardInterrupt"
        assert outcomes[0]["type"] == "ReporterError"
        assert "another process of the run stopped" in outcomes[0]["error"]
    else:  # every process refuses a run whose processes hold different weights
        for outcome in outcomes:
            assert outcome["type"] == "ReporterError"
            assert outcome["error"].startswith("Process 1 loaded other model weights than")
    assert folder_snapshot(old) == before
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".report.")]
    assert all(name == ".report.lock" for name in leftovers), leftovers


# ------------------------------------------------------------------ the parts


def test_dist_env_reads_torchrun_variables() -> None:
    assert dist_env({}) is None
    assert dist_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    env = {
        "WORLD_SIZE": "4",
        "RANK": "3",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }
    assert dist_env(env) == DistEnv(3, 4, 1, 2, "10.0.0.1", 29500)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "outside 0..1"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "1"}, "MASTER_ADDR is not set"),
        ({"WORLD_SIZE": "0"}, "must be at least 1"),
    ],
)
def test_dist_env_refuses_partial_variables(env: dict[str, str], message: str) -> None:
    with pytest.raises(ReporterError, match=message):
        dist_env(env)


@pytest.mark.parametrize(("n", "world", "batch"), [(67, 3, 8), (10, 4, 4), (5, 3, 8), (0, 2, 8)])
def test_shard_deals_whole_batches_in_turn(n: int, world: int, batch: int) -> None:
    indices = np.arange(100, 100 + n) * 2  # any increasing dataset indices
    shards = [shard(indices, r, world, batch) for r in range(world)]
    together = np.concatenate(shards)
    assert sorted(together.tolist()) == indices.tolist()  # disjoint and covering
    assert len(set(together.tolist())) == n
    single = [indices[i : i + batch].tolist() for i in range(0, n, batch)]
    for r, mine in enumerate(shards):
        assert mine.tolist() == sorted(mine.tolist())  # each keeps the order
        batches = [mine[i : i + batch].tolist() for i in range(0, len(mine), batch)]
        assert batches == single[r::world]  # ... and runs batches a single process runs


def test_merge_topk_equals_one_pass_over_everything_with_ties() -> None:
    from reporter.featvis import TopKActivations

    gen = torch.Generator().manual_seed(0)
    # integer-valued activations: many ties, which must fall to the lowest image index
    acts = torch.randint(0, 3, (30, 5, 2, 2), generator=gen).float()
    idx = torch.arange(30) * 3
    whole = TopKActivations("l", k=4)
    for b in range(0, 30, 4):
        whole.update(acts[b : b + 4], idx[b : b + 4])
    parts = []
    for rank in range(3):
        mine = TopKActivations("l", k=4)
        for b in range(rank * 4, 30, 12):  # batches dealt in turn, as shard() does
            mine.update(acts[b : b + 4], idx[b : b + 4])
        parts.append(mine)
    values, indices, positions = merge_topk(
        [p.values for p in parts], [p.indices for p in parts], [p.positions for p in parts], 4
    )
    assert torch.equal(values, whole.values)
    assert torch.equal(indices, whole.indices)
    assert torch.equal(positions, whole.positions)
    # the oracle: per channel, sort by (value descending, index ascending)
    best = acts.flatten(2).max(2).values
    for ch in range(5):
        expect = sorted(range(30), key=lambda i: (-float(best[i, ch]), int(idx[i])))[:4]
        assert indices[ch].tolist() == [int(idx[i]) for i in expect]


def test_single_process_session_is_the_identity() -> None:
    s = Session()
    assert s.is_main and not s.distributed
    t = [torch.ones(2, 3), torch.arange(4)]
    assert s.sum_to_main(t) == t
    rows = np.zeros((3, 5), np.uint8)
    assert s.gather_rows(rows)[0] is rows
    assert s.all_gather_object({"a": 1}) == [{"a": 1}]
    with pytest.raises(ValueError), s.stage("x"):
        raise ValueError("passes through unchanged")


def test_audit_help_lists_the_scale_flags() -> None:
    from click.testing import CliRunner

    from reporter.cli import cli

    out = CliRunner().invoke(cli, ["audit", "--help"]).output
    assert "--workers" in out and "--precision [fp32|bf16|fp16]" in out


def test_bundle_compare_sees_a_changed_number_and_ignores_clocks() -> None:
    a = {"timings": {"x": 1.0}, "generated": "t1", "metrics": {"accuracy": 0.5, "n": [1, 2]}}
    b = {"timings": {"x": 9.0}, "generated": "t2", "metrics": {"accuracy": 0.5, "n": [1, 2]}}
    assert json_differences(a, b) == []
    b["metrics"]["accuracy"] = 0.5 * (1 + 1e-5)
    assert json_differences(a, b) == ["metrics.accuracy: 0.5 != 0.500005"]
    b["metrics"]["accuracy"] = 0.5 * (1 + 1e-8)
    assert json_differences(a, b) == []
    b["metrics"]["n"] = [2, 1]
    assert json_differences(a, b) == ["metrics.n.0: 1 != 2", "metrics.n.1: 2 != 1"]


def test_workers_default_from_the_cpu_count(tmp_path: Path) -> None:
    from reporter.data import load_dataset
    from reporter.data.datasets import MAX_AUTO_WORKERS, default_workers

    files = load_dataset(str(make_image_folder(tmp_path / "d", {"a": 2, "b": 2}))).test
    digits = load_dataset("digits").test
    assert default_workers(digits, cpus=64) == 0  # in memory: nothing to load
    assert default_workers(files, cpus=2) == 1
    assert default_workers(files, cpus=1) == 0
    assert default_workers(files, cpus=16, processes=2) == 7
    assert default_workers(files, cpus=64) == MAX_AUTO_WORKERS
    sub = torch.utils.data.Subset(files, [0, 1])
    assert default_workers(sub, cpus=4) == 3


def test_workers_option_is_checked() -> None:
    from reporter.config import AuditConfig

    with pytest.raises(ReporterError, match="workers = -1 is out of range"):
        AuditConfig(workers=-1)
    with pytest.raises(ReporterError, match="precision must be fp32, bf16 or fp16"):
        AuditConfig(precision="int8")


# ------------------------------------------------------------------ --precision


def test_map_pearson_matches_numpy_and_handles_flat_and_nan_maps() -> None:
    from reporter.audit.precision import map_pearson

    gen = torch.Generator().manual_seed(1)
    a = torch.rand(4, 5, 6, generator=gen)
    b = a + 0.3 * torch.rand(4, 5, 6, generator=gen)
    r = map_pearson(a, b)
    for i in range(4):
        expected = np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1]
        assert r[i].item() == pytest.approx(expected, rel=1e-9)
    flat = torch.zeros(2, 3, 3)
    assert map_pearson(flat, flat).tolist() == [1.0, 1.0]  # equal constant maps agree
    assert map_pearson(flat, flat + 1).tolist() == [0.0, 0.0]
    nan = a.clone()
    nan[0, 0, 0] = float("nan")
    assert map_pearson(a, nan)[0].item() == 0.0


class _FakeEngine:
    """Returns fixed maps; under autocast, the maps ``low`` makes of them."""

    def __init__(self, low) -> None:
        self.low = low
        self.autocast_calls = 0
        self.calls = 0

    def __call__(self, images: torch.Tensor):
        from types import SimpleNamespace

        self.calls += 1
        maps = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 4, 4).sin() + 1
        if torch.is_autocast_enabled("cpu"):
            self.autocast_calls += 1
            maps = self.low(maps)
        return SimpleNamespace(maps={"gradcam": {"layer": maps}})


@pytest.mark.parametrize(
    ("low", "used"),
    [
        (lambda m: m * 2 + 1, "bf16"),  # a scaled map: correlation 1, accepted
        (lambda m: m.flip(-1), "fp32"),  # a different map: refused, the pass runs in fp32
    ],
)
def test_precision_checked_against_fp32_on_the_first_batch(
    low, used: str, caplog: pytest.LogCaptureFixture
) -> None:
    from reporter.audit.precision import MIN_PEARSON, PrecisionGuard

    engine = _FakeEngine(low)
    guard = PrecisionGuard("bf16", torch.device("cpu"))
    images = torch.zeros(2, 1, 4, 4)
    with caplog.at_level(logging.WARNING, logger="reporter"):
        guard.calibrate(engine, images)
        for _ in range(3):
            guard(engine, images)
    summary = guard.summary()
    assert summary["requested"] == "bf16" and summary["used"] == used
    assert (summary["first_batch_min_pearson"] >= MIN_PEARSON) == (used == "bf16")
    # the check costs one fp32 and one autocast call; then every batch at the precision used
    assert engine.autocast_calls == (4 if used == "bf16" else 1)
    assert engine.calls == 5
    warned = [r.getMessage() for r in caplog.records if "--precision bf16" in r.getMessage()]
    assert len(warned) == (used == "fp32")


def test_precision_fp32_never_autocasts() -> None:
    from reporter.audit.precision import PrecisionGuard

    engine = _FakeEngine(lambda m: m)
    guard = PrecisionGuard("fp32", torch.device("cpu"))
    guard.calibrate(engine, torch.zeros(1))
    guard(engine, torch.zeros(1))
    assert (engine.calls, engine.autocast_calls) == (1, 0)
    assert guard.summary()["first_batch_min_pearson"] is None


def test_precision_bf16_with_a_real_engine_on_the_cpu() -> None:
    from reporter.audit.precision import MIN_PEARSON, PrecisionGuard, min_pearson
    from reporter.explain import CamEngine
    from reporter.models import build_model

    torch.manual_seed(0)
    model = build_model("gapnet", 3, channels=3)
    images = torch.rand(4, 3, 20, 20)
    with CamEngine(model, methods=["gradcam", "eigencam"], device="cpu") as engine:
        guard = PrecisionGuard("bf16", torch.device("cpu"))
        guard.calibrate(engine, images)
        result = guard(engine, images)
        reference = engine(images)
    r = guard.summary()["first_batch_min_pearson"]
    assert r == pytest.approx(min_pearson(reference, guard.low(engine, images)), abs=1e-12) or (
        guard.used == "fp32"
    )
    assert guard.used == ("bf16" if r >= MIN_PEARSON else "fp32")
    assert result.maps["gradcam"][engine.layers[0]].dtype == torch.float32


# ------------------------------------------------------------------ JPEG decode on the GPU


@pytest.fixture
def jpeg_folder(tmp_path: Path) -> Path:
    """Plain RGB and grey JPEGs, and the files the GPU path leaves to the CPU."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "jpegs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for j in range(3):
            arr = rng.integers(0, 255, size=(24, 30, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"rgb_{j}.jpg", quality=95)
    Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(root / "a" / "grey.jpg")
    rotated = Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(root / "a" / "rotated.jpg", exif=exif)
    Image.new("CMYK", (20, 20), (10, 200, 30, 0)).save(root / "b" / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
        root / "b" / "png_inside.jpg", format="PNG"
    )
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def _files(folder: Path):
    from reporter.data import Preprocess, load_dataset

    test = load_dataset(str(folder), test_only=True).test
    pre = Preprocess((16, 16), 3, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    test.transform = pre
    return test, pre


def test_gpu_decode_is_chosen_only_for_jpeg_files_on_cuda(
    jpeg_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reporter.data import load_dataset
    from reporter.data.gpu_decode import gpu_decode_reason

    jpegs = load_dataset(str(jpeg_folder), test_only=True).test
    cuda = torch.device("cuda", 0)
    assert gpu_decode_reason(jpegs, cuda, supported=True) is None
    sub = torch.utils.data.Subset(jpegs, [0, 1])
    assert gpu_decode_reason(sub, cuda, supported=True) is None
    assert "CUDA" in gpu_decode_reason(jpegs, "cpu", supported=True)
    assert "0.19" in gpu_decode_reason(jpegs, cuda, supported=False)
    pngs = load_dataset(str(make_image_folder(tmp_path / "png", {"a": 1, "b": 1}))).test
    assert gpu_decode_reason(pngs, cuda, supported=True) == "not every image file is a JPEG"
    digits = load_dataset("digits").test
    assert gpu_decode_reason(digits, cuda, supported=True) == "the images are held in memory"
    monkeypatch.setenv("REPORTER_GPU_DECODE", "0")
    assert gpu_decode_reason(jpegs, cuda, supported=True) == "REPORTER_GPU_DECODE=0"


def test_jpeg_files_leave_odd_files_to_the_cpu(jpeg_folder: Path) -> None:
    from reporter.data.gpu_decode import JpegFiles

    test, _ = _files(jpeg_folder)
    files = JpegFiles(test)
    kinds = {test.relative(i): files[i][0] for i in range(len(test))}
    plain = {f"{c}/rgb_{j}.jpg" for c in "ab" for j in range(3)} | {"a/grey.jpg"}
    assert {n for n, k in kinds.items() if k == "jpeg"} == plain
    for name in ("a/rotated.jpg", "b/cmyk.jpg", "b/png_inside.jpg", "b/broken.jpg"):
        assert kinds[name] == "pixels"
    i = next(i for i in range(len(test)) if test.files[i].name == "rgb_0.jpg")
    assert files[i][1].numpy().tobytes() == test.files[i].read_bytes()
    broken = next(i for i in range(len(test)) if test.files[i].name == "broken.jpg")
    assert files[broken][1] is None and files[broken][4]  # the CPU path's reason


def test_decoder_batches_match_the_cpu_path(jpeg_folder: Path) -> None:
    """The decoder's code, run with torchvision's CPU decoder: same items, order, labels,
    skipped files and (within the check's bar) pixels as the usual loader."""
    from reporter.data.datasets import make_loader
    from reporter.data.gpu_decode import (
        MAX_MEAN_DIFFERENCE,
        GpuJpegDecoder,
        JpegFiles,
        collate_jpeg,
    )

    test, pre = _files(jpeg_folder)
    order = list(range(len(test)))
    decoder = GpuJpegDecoder(test, pre, torch.device("cpu"))
    raw = make_loader(JpegFiles(test), batch_size=len(test), indices=order, collate_fn=collate_jpeg)
    batch = next(iter(raw))
    decoder.calibrate(batch)
    assert decoder.enabled and decoder.difference is not None
    assert decoder.difference <= MAX_MEAN_DIFFERENCE
    mine = decoder(batch)
    cpu = next(iter(make_loader(test, batch_size=len(test), indices=order)))
    assert mine.indices.tolist() == cpu.indices.tolist()
    assert mine.labels.tolist() == cpu.labels.tolist()
    assert [i for i, _ in mine.skipped] == [i for i, _ in cpu.skipped]
    diff = (pre.denormalize(mine.images) - pre.denormalize(cpu.images)).abs()
    assert float(diff.flatten(1).mean(1).max()) == pytest.approx(decoder.difference)
    assert decoder.summary()["jpeg_on_gpu"] is True


def test_decoder_falls_back_to_the_cpu_when_the_check_fails(
    jpeg_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from reporter.data.datasets import make_loader
    from reporter.data.gpu_decode import GpuJpegDecoder, JpegFiles, collate_jpeg

    test, pre = _files(jpeg_folder)
    order = list(range(len(test)))
    decoder = GpuJpegDecoder(test, pre, torch.device("cpu"))
    real = decoder._decode
    decoder._decode = lambda payloads: [255 - x for x in real(payloads)]  # a wrong decoder
    batch = next(
        iter(make_loader(JpegFiles(test), batch_size=8, indices=order, collate_fn=collate_jpeg))
    )
    with caplog.at_level(logging.WARNING, logger="reporter"):
        decoder.calibrate(batch)
    assert not decoder.enabled
    assert decoder.summary()["jpeg_on_gpu"] is False
    assert any("decoding on the CPU" in r.getMessage() for r in caplog.records)
    cpu = next(iter(make_loader(test, batch_size=8, indices=order)))
    fallback = decoder(batch)
    assert torch.equal(fallback.images, cpu.images)  # now exactly the CPU decode
    assert fallback.indices.tolist() == cpu.indices.tolist()


def test_stream_batches_through_the_decoder_equal_the_cpu_batches(jpeg_folder: Path) -> None:
    """The stream pass's GPU-decode branch, run with the CPU decoder in place of nvJPEG."""
    from types import SimpleNamespace

    from reporter.audit.stream import _Decode
    from reporter.data.datasets import make_loader
    from reporter.data.gpu_decode import MAX_MEAN_DIFFERENCE, GpuJpegDecoder

    test, pre = _files(jpeg_folder)
    prep = SimpleNamespace(bundle=SimpleNamespace(test=test), preprocess=pre)
    config = SimpleNamespace(batch_size=4, workers=0)
    decode = _Decode(prep, config, torch.device("cpu"))  # type: ignore[arg-type]
    assert decode.decoder is None and decode.summary()["reason"]
    decode.decoder = GpuJpegDecoder(test, pre, torch.device("cpu"))
    order = np.arange(len(test))
    mine = list(decode.batches(order[2:], order[:4]))
    cpu = list(make_loader(test, batch_size=4, indices=order[2:].tolist()))
    assert [b.indices.tolist() for b in mine] == [b.indices.tolist() for b in cpu]
    assert [b.skipped for b in mine] == [b.skipped for b in cpu]
    for a, b in zip(mine, cpu, strict=True):
        if len(b):
            diff = (pre.denormalize(a.images) - pre.denormalize(b.images)).abs()
            assert float(diff.flatten(1).mean(1).max()) <= MAX_MEAN_DIFFERENCE
    summary = decode.summary()
    assert summary["jpeg_on_gpu"] is True and summary["reason"] is None
    assert summary["first_batch_max_mean_difference"] is not None

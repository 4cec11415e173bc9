"""torch.distributed for the audit: who does which share, and how the shares come together.

``torchrun --nproc-per-node N -m reporter audit ...`` starts N copies of the audit. Each finds
its place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins one process group: gloo on the CPU, NCCL on CUDA
(each process on the GPU of its ``LOCAL_RANK``). Without those variables, or with
``WORLD_SIZE=1``, nothing here starts a process group and every operation is the identity.

What this module offers the stages:

- :func:`shard`: the images of one process. Batches of the fixed audit order are dealt in turn
  (batch ``b`` to rank ``b mod W``), so the shards are disjoint, cover every image, and every
  batch is exactly the batch a single process would have run (same per-image numbers).
- :meth:`Session.stage`: a stage boundary. Every process reports whether the block failed (one
  ``all_reduce`` of an error flag); if any did, every process stops with one line naming the
  process and its message, and nothing is written.
- :meth:`Session.sum_to_main` (sums: counts, class sums, flags, relevance; reduced in float64),
  :meth:`Session.gather_rows` (per-image records, as byte rows), :func:`merge_topk` (top-k
  merge with ties broken by image index) and :meth:`Session.all_gather_object` (small
  metadata).

A peer that stops (Ctrl-C, a crash, a kill) or does not answer within the timeout
(``REPORTER_DIST_TIMEOUT`` seconds, default :data:`DEFAULT_TIMEOUT_S`) turns into a
:class:`~reporter.errors.ReporterError` on the others instead of a hang or a traceback.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reporter.errors import ReporterError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistEnv",
    "Session",
    "dist_env",
    "merge_topk",
    "session",
    "shard",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3600.0
"""Seconds a process waits for the others at a collective (training on rank 0 included)."""

_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in a torchrun job (read from the environment)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def _int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = environ.get(name)
    if text is None:
        if default is None:
            raise ReporterError(
                f"{name} is not set although WORLD_SIZE is; start the run with torchrun "
                "(it sets RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)."
            )
        return default
    try:
        return int(text)
    except ValueError:
        raise ReporterError(
            f"{name}={text!r} is not an integer; start the run with torchrun."
        ) from None


def dist_env(environ: Mapping[str, str] | None = None) -> DistEnv | None:
    """The torchrun variables of this process, or ``None`` for a single-process run.

    Raises:
        ReporterError: for a partial or inconsistent set of variables.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return None
    world = _int(environ, "WORLD_SIZE")
    if world < 1:
        raise ReporterError(f"WORLD_SIZE={world} must be at least 1.")
    if world == 1:
        return None
    rank = _int(environ, "RANK")
    local = _int(environ, "LOCAL_RANK", 0)
    local_world = _int(environ, "LOCAL_WORLD_SIZE", 1)
    if not 0 <= rank < world:
        raise ReporterError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world}).")
    addr = environ.get("MASTER_ADDR")
    if not addr:
        raise ReporterError("MASTER_ADDR is not set; start the run with torchrun.")
    port = _int(environ, "MASTER_PORT")
    return DistEnv(rank, world, local, max(local_world, 1), addr, port)


def shard(indices: np.ndarray, rank: int, world_size: int, batch_size: int) -> np.ndarray:
    """The images of ``rank``: batches of ``indices`` (in order) dealt in turn to the ranks.

    Batch ``b`` (images ``b * batch_size`` to ``(b + 1) * batch_size - 1`` of ``indices``) goes
    to rank ``b mod world_size``. The shards are disjoint and cover ``indices``; each keeps
    the order, and each of its batches is one a single process would run.
    """
    if world_size <= 1:
        return indices
    n_batches = -(-len(indices) // batch_size)
    mine = [
        indices[b * batch_size : (b + 1) * batch_size] for b in range(rank, n_batches, world_size)
    ]
    return np.concatenate(mine) if mine else indices[:0]


def merge_topk(
    values: Sequence[torch.Tensor],
    indices: Sequence[torch.Tensor],
    positions: Sequence[torch.Tensor],
    k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge per-rank top-k lists ``[n, k_r]`` into one ``[n, min(k, sum k_r)]``.

    Candidates are ordered by value (largest first; NaN first, as :func:`torch.sort` does)
    and, among equal values, by image index: the order a single process keeps when it sees
    the images in index order (see :class:`~reporter.featvis.TopKActivations`).
    """
    v = torch.cat([t.float() for t in values], dim=1)
    i = torch.cat([t.long() for t in indices], dim=1)
    p = torch.cat([t.long() for t in positions], dim=1)
    by_index = torch.sort(i, dim=1, stable=True).indices
    v, i, p = v.gather(1, by_index), i.gather(1, by_index), p.gather(1, by_index)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    return v.gather(1, order), i.gather(1, order), p.gather(1, order)


class Session:
    """The process group of one audit run (or a stand-in for a single process).

    Attributes:
        rank: This process's rank (0 for a single process).
        world_size: Number of processes (1 for a single process).
        local_rank: Rank on this machine (selects the GPU).
        backend: ``gloo``, ``nccl`` or ``None`` (single process).
    """

    def __init__(
        self,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        backend: str | None = None,
        comm_device: torch.device | None = None,
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.backend = backend
        self.comm_device = comm_device or torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this process writes the bundle (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is in use."""
        return self.world_size > 1

    # -- failure handling ------------------------------------------------------------------
    def _collective(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one collective; a peer that stopped or timed out becomes a clear error."""
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, OSError) as exc:  # gloo/NCCL errors, DistBackendError included
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ReporterError(
                f"Process {self.rank} of {self.world_size}: another process of the run stopped "
                f"or did not answer while {what} ({first[:200]}); nothing was written."
            ) from None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A stage boundary: if the block fails on any process, every process stops.

        The block's ``Exception`` is caught, an error flag is reduced over all processes
        (``all_reduce`` MAX), and when any flag is set the messages are exchanged: the failing
        process re-raises its own exception, the others raise a
        :class:`~reporter.errors.ReporterError` that names it. ``KeyboardInterrupt`` and
        signals are not caught: the process stops, and the others learn it at their next
        collective. With one process the block runs unchanged.
        """
        if not self.distributed:
            yield
            return
        error: BaseException | None = None
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reported to the others, then re-raised
            error = exc
        flag = torch.tensor([1 if error is not None else 0], device=self.comm_device)
        import torch.distributed as dist

        self._collective(name, dist.all_reduce, flag, op=dist.ReduceOp.MAX)
        if int(flag.item()) == 0:
            return
        text = None
        if error is not None:
            text = (str(error).strip().splitlines() or [type(error).__name__])[0]
            if not isinstance(error, ReporterError):
                text = f"{type(error).__name__}: {text}"
        messages = self.all_gather_object(text, what=name)
        if error is not None:
            raise error
        failed = [(r, m) for r, m in enumerate(messages) if m is not None]
        r, message = failed[0]
        others = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise ReporterError(
            f"Process {r} of {self.world_size} failed while {name}{others}: {message} "
            "Nothing was written."
        )

    # -- collectives -----------------------------------------------------------------------
    def all_gather_object(self, obj: Any, *, what: str = "exchanging metadata") -> list[Any]:
        """``obj`` of every process, in rank order (small picklable objects only)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        self._collective(what, dist.all_gather_object, out, obj)
        return out

    def sum_to_main(
        self, tensors: Sequence[torch.Tensor], *, what: str = "merging sums"
    ) -> list[torch.Tensor] | None:
        """The element-wise sums of ``tensors`` over all processes, on rank 0 (``None`` on
        the others). Every process passes tensors of the same shapes in the same order.

        The sums are taken in float64 (exact for counts) and returned in each tensor's dtype.
        """
        if not self.distributed:
            return list(tensors)
        import torch.distributed as dist

        flat = torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors])
        flat = flat.to(self.comm_device)
        self._collective(what, dist.reduce, flat, dst=0, op=dist.ReduceOp.SUM)
        if not self.is_main:
            return None
        flat = flat.cpu()
        out: list[torch.Tensor] = []
        start = 0
        for t in tensors:
            n = t.numel()
            out.append(flat[start : start + n].reshape(t.shape).to(t.dtype))
            start += n
        return out

    def gather_rows(
        self, rows: np.ndarray, *, what: str = "gathering per-image records"
    ) -> list[np.ndarray] | None:
        """Every process's ``rows`` (``[n_r, R]`` uint8, same ``R`` everywhere) on rank 0, in
        rank order (``None`` on the others)."""
        if not self.distributed:
            return [rows]
        import torch.distributed as dist

        counts = self.all_gather_object(int(rows.shape[0]), what=what)
        longest = max(max(counts), 1)
        width = rows.shape[1]
        padded = torch.zeros(longest, width, dtype=torch.uint8)
        if rows.shape[0]:
            padded[: rows.shape[0]] = torch.from_numpy(np.ascontiguousarray(rows))
        padded = padded.to(self.comm_device)
        bucket = (
            [torch.empty_like(padded) for _ in range(self.world_size)] if self.is_main else None
        )
        self._collective(what, dist.gather, padded, bucket, dst=0)
        if bucket is None:
            return None
        return [b.cpu().numpy()[:n] for b, n in zip(bucket, counts, strict=True)]


def _timeout() -> float:
    text = os.environ.get("REPORTER_DIST_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ReporterError(f"REPORTER_DIST_TIMEOUT={text!r} must be a number of seconds above 0.")
    return value


@contextmanager
def session(device: str = "auto") -> Iterator[Session]:
    """Join the torchrun process group for the run (a single-process stand-in without one).

    Args:
        device: The audit's ``--device``. ``auto`` and ``cuda`` use NCCL and the GPU of
            ``LOCAL_RANK`` when CUDA is available; ``cpu`` (or no CUDA) uses gloo.

    The group is left when the block ends, on success or failure.
    """
    env = dist_env()
    if env is None:
        yield Session()
        return
    import torch.distributed as dist

    if not dist.is_available():  # pragma: no cover - every official build has it
        raise ReporterError("This PyTorch build has no torch.distributed; run one process.")
    use_cuda = torch.cuda.is_available() and (device in ("auto", "") or device.startswith("cuda"))
    backend = "nccl" if use_cuda else "gloo"
    comm = torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(env.local_rank % max(1, torch.cuda.device_count()))
        comm = torch.device("cuda", torch.cuda.current_device())
    timeout = _dt.timedelta(seconds=_timeout())
    try:
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, timeout=timeout)
    except (RuntimeError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ReporterError(
            f"Process {env.rank} of {env.world_size} could not join the others at "
            f"{env.master_addr}:{env.master_port} ({first[:200]}); check --master-addr and "
            "--master-port, and that the port is free and reachable."
        ) from None
    log.info("process %d of %d joined (%s)", env.rank, env.world_size, backend)
    try:
        yield Session(env.rank, env.world_size, env.local_rank, backend, comm)
    finally:
        try:
            dist.destroy_process_group()
        except Exception:  # leaving a broken group must not hide the error
            log.debug("destroy_process_group failed", exc_info=True)

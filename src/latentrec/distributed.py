"""torchrun / DistributedDataParallel glue; in a single process every call is a no-op.

`torchrun` starts one process per rank and tells each, through environment variables, its
rank, the world size and where to meet. `setup` joins the process group (gloo on the CPU, NCCL
on GPUs); training then wraps the model in DistributedDataParallel, each rank takes its share of
every step's ratings, and metrics are summed across ranks with `all_reduce_sum`.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from latentrec.errors import ConfigError

# whether this process has joined a process group (it may have left it since)
_joined = False


@dataclass(frozen=True)
class Context:
    """Where this process stands in a torchrun job.

    Args:
        rank: this process's rank, 0 .. world_size - 1; rank 0 prints and writes files.
        world_size: how many processes train together.
        local_rank: rank on this machine (picks the GPU).
        restart: how many times torchrun has restarted the worker group (0 on the first run).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(
            f"environment variable {name} must be a whole number, got {value!r}"
        ) from err


def from_environment() -> Context:
    """The context torchrun describes in the environment (rank 0 of 1 when it is not there)."""
    context = Context(
        rank=_env_int("RANK", 0),
        world_size=_env_int("WORLD_SIZE", 1),
        local_rank=_env_int("LOCAL_RANK", 0),
        restart=_env_int("TORCHELASTIC_RESTART_COUNT", 0),
    )
    if context.world_size < 1 or not 0 <= context.rank < context.world_size:
        raise ConfigError(
            f"RANK={context.rank} and WORLD_SIZE={context.world_size} do not fit together; "
            "start latentrec with torchrun, which sets them"
        )
    return context


def setup(device: torch.device) -> Context:
    """Join torchrun's process group if there is one (idempotent) and return the context.

    The backend is NCCL for CUDA devices and gloo for the CPU; on CUDA, each rank takes the
    GPU of its local rank.
    """
    context = from_environment()
    if not context.active or dist.is_initialized():
        return context
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(
        backend=backend, store=_store(context), rank=context.rank, world_size=context.world_size
    )
    global _joined
    _joined = True
    return context


def _store(context: Context) -> dist.Store:
    """The rendezvous store, its keys prefixed by the restart count.

    After a restart torchrun hands the new workers the store the failed ones used; without a
    prefix of their own, a new worker can read a dead one's address and fail to connect.
    """
    address = os.environ.get("MASTER_ADDR")
    if not address:
        raise ConfigError("MASTER_ADDR is not set; start latentrec with torchrun, which sets it")
    port = _env_int("MASTER_PORT", 0)
    # torchrun's agent hosts the store; launched otherwise, rank 0 does
    hosted_by_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        address,
        port,
        context.world_size,
        is_master=not hosted_by_agent and context.rank == 0,
        timeout=timedelta(minutes=30),
    )
    return dist.PrefixStore(f"latentrec/attempt-{context.restart}", store)


def device_for(device: torch.device, context: Context) -> torch.device:
    """Each rank's own GPU under torchrun; the given device otherwise."""
    if context.active and device.type == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


def sparse_gradients_supported() -> bool:
    """NCCL has no sparse all-reduce; gloo (and a single process) have."""
    return not (dist.is_initialized() and dist.get_backend() == "nccl")


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel when the process group is up; unchanged otherwise.

    Under gloo, the tables' sparse gradients are exchanged by `_exchange_gradients`."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    wrapped = nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, **_no_buffer_sync()
    )
    if dist.get_backend() == "gloo":
        wrapped.register_comm_hook(_SparseExchange(_sparse_parameters(module)), _exchange_gradients)
    return wrapped


def _sparse_parameters(module: nn.Module) -> int:
    """How many of the module's trained parameters get sparse gradients (each is a DDP bucket
    of its own)."""
    return sum(
        parameter.requires_grad
        for layer in module.modules()
        if isinstance(layer, nn.Embedding | nn.EmbeddingBag) and layer.sparse
        for parameter in layer.parameters(recurse=False)
    )


def _no_buffer_sync() -> dict[str, bool]:
    """DDP's option to skip sending the buffers before every forward pass.

    The models' buffers are constants (the global mean), the same on every rank from the
    start; sending them cost a collective per step. torch 2.13 renamed the option."""
    options = inspect.signature(nn.parallel.DistributedDataParallel).parameters
    if "forward_sync_buffers" in options:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class _SparseExchange:
    """The state of `_exchange_gradients`: how many sparse gradients a step has, those of this
    step waiting to be sent, and the most bytes a rank has sent (what each rank sends in the
    first round)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.waiting: list[tuple[Tensor, torch.futures.Future]] = []
        self.capacity = 0


def _exchange_gradients(state, bucket):  # no annotations: DDP checks them, and these are strings
    """DDP's gradient averaging (a communication hook) with one all-gather per step for all
    sparse gradients.

    gloo's own sparse all-reduce takes several round trips per table, and DDP starts one per
    table: 4 per step of the dot model. Worse, gloo runs them on two threads at once, which
    now and then corrupts the heap (the worker dies with SIGSEGV or "malloc(): unaligned
    tcache chunk detected" inside the sparse all-reduce). So sparse
    gradients wait here until all of the step's have come (or its last bucket has: counting
    rather than waiting for the last bucket alone also works under `static_graph`, whose first
    step numbers every bucket 0), and then every rank sends all of them as one block of bytes;
    each rank puts the blocks together into the same sum. Dense buckets are all-reduced as DDP
    does.
    """
    world = dist.get_world_size()
    tensor = bucket.buffer()
    if tensor.is_sparse:
        future = torch.futures.Future()
        state.waiting.append((tensor, future))
    else:
        tensor.div_(world)
        future = dist.all_reduce(tensor, async_op=True).get_future()
        future = future.then(lambda done: done.value()[0])
    if state.waiting and (len(state.waiting) >= state.expected or bucket.is_last()):
        waiting, state.waiting = state.waiting, []
        try:
            sums = _gather_sparse(state, [t for t, _ in waiting], world)
        except Exception as err:  # DDP waits on every future: fail them rather than hang
            for _, pending in waiting:
                pending.set_exception(err)
            raise
        for (_, pending), total in zip(waiting, sums, strict=True):
            pending.set_result(total)
    return future


# every piece of a block starts at a multiple of 16 bytes, so views of it in any element type
# (complex128 included) are aligned
_ALIGN = 16


def _padded(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _gather_sparse(state: _SparseExchange, tensors: list[Tensor], world: int) -> list[Tensor]:
    """The mean over ranks of each sparse tensor (the same list on every rank).

    A rank's block is a header (each tensor's number of entries) and then each tensor's indices
    and values as bytes. Each rank sends `state.capacity` bytes after the header; when a block
    is longer on any rank, which every rank reads in the headers, a second all-gather carries
    the rest.
    """
    header = torch.tensor([t._nnz() for t in tensors], dtype=torch.int64).view(torch.uint8)
    head = _padded(header.numel())
    payload = _pack(tensors)
    first = torch.zeros(head + state.capacity, dtype=torch.uint8)
    first[: header.numel()] = header
    sent = min(payload.numel(), state.capacity)
    first[head : head + sent] = payload[:sent]
    received = torch.empty(world, first.numel(), dtype=torch.uint8)
    dist.all_gather(list(received.unbind(0)), first)
    counts = received[:, : header.numel()].contiguous().view(torch.int64).tolist()
    largest = max(sum(map(_padded, _piece_bytes(tensors, c))) for c in counts)
    blocks = received[:, head:]
    if largest > state.capacity:
        rest = torch.zeros(largest - state.capacity, dtype=torch.uint8)
        rest[: payload.numel() - sent] = payload[sent:]
        more = torch.empty(world, rest.numel(), dtype=torch.uint8)
        dist.all_gather(list(more.unbind(0)), rest)
        blocks = torch.cat([blocks, more], dim=1)
    # the most any rank has sent: an epoch's short last step does not shrink it, so the next
    # epoch's first step needs no second round
    state.capacity = max(state.capacity, largest)
    parts = [_unpack(tensors, blocks[rank], counts[rank]) for rank in range(world)]
    return [
        torch.sparse_coo_tensor(
            torch.cat([indices for indices, _ in by_rank], dim=1),
            torch.cat([values for _, values in by_rank]).div_(world),
            t.shape,
            check_invariants=False,  # every rank's indices were valid ones
        )
        for t, by_rank in zip(tensors, zip(*parts, strict=True), strict=True)
    ]


def _pack(tensors: list[Tensor]) -> Tensor:
    """Each tensor's indices and then values as bytes, each piece padded to _ALIGN."""
    pieces = [torch.empty(0, dtype=torch.uint8)]
    for t in tensors:
        for part in (t._indices(), t._values()):
            raw = part.contiguous().reshape(-1).view(torch.uint8)
            pieces += [raw, raw.new_zeros(_padded(raw.numel()) - raw.numel())]
    return torch.cat(pieces)


def _piece_bytes(tensors: list[Tensor], counts: list[int]) -> list[int]:
    """The bytes of each piece (indices, values, per tensor) when the tensors have `counts`
    entries, before padding."""
    sizes = []
    for t, n in zip(tensors, counts, strict=True):
        dense = t.shape[t.sparse_dim() :]
        sizes += [n * 8 * t.sparse_dim(), n * math.prod(dense) * t.element_size()]
    return sizes


def _unpack(tensors: list[Tensor], block: Tensor, counts: list[int]) -> list[tuple[Tensor, Tensor]]:
    """The (indices, values) of each tensor in one rank's block, as views of it."""
    pieces = []
    at = 0
    for size in _piece_bytes(tensors, counts):
        pieces.append(block[at : at + size])
        at += _padded(size)
    return [
        (
            pieces[2 * j].view(torch.int64).view(t.sparse_dim(), n),
            pieces[2 * j + 1].view(t.dtype).view(n, *t.shape[t.sparse_dim() :]),
        )
        for j, (t, n) in enumerate(zip(tensors, counts, strict=True))
    ]


def all_reduce_sum(values: Tensor) -> Tensor:
    """The element-wise sum of `values` over all ranks (the tensor itself in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _for_backend(values: Tensor) -> Tensor:
    """`values` where the process group's backend takes them: NCCL only CUDA tensors."""
    if dist.get_backend() == "nccl":
        return values.to(torch.device("cuda", torch.cuda.current_device()))
    return values.clone()


def from_rank_zero(values: Tensor) -> Tensor:
    """Rank 0's `values` on every rank, on the CPU (the tensor itself in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        sent = _for_backend(values)
        dist.broadcast(sent, src=0)
        values = sent.cpu()
    return values


def differs_anywhere(values: Tensor) -> bool:
    """Whether any rank holds other `values` than rank 0's: the same answer on every rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return False
    differs = _for_backend(torch.tensor([int(not torch.equal(values, from_rank_zero(values)))]))
    dist.all_reduce(differs, op=dist.ReduceOp.SUM)
    return bool(differs.item())


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (at the end of a torchrun worker)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def joined() -> bool:
    """Whether `setup` joined a process group in this process.

    DistributedDataParallel's reducer keeps the gloo process group, and its threads, alive past
    `destroy_process_group`; destroying them in the interpreter's teardown aborts the process now
    and then ("terminate called without an active exception", SIGABRT), which torchrun counts as
    a failed worker. A worker that joined should therefore end with `os._exit` once its files
    are written and its output flushed, as the command line does.
    """
    return _joined

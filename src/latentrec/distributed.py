"""torchrun / DistributedDataParallel glue; in a single process every call is a no-op.

`torchrun` starts one process per rank and tells each, through environment variables, its
rank, the world size and where to meet. `setup` joins the process group (gloo on the CPU, NCCL
on GPUs); training then wraps the model in DistributedDataParallel, each rank takes its share of
every step's ratings, and metrics are summed across ranks with `all_reduce_sum`.
"""

from __future__ import annotations

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

    Under gloo, the gradients are averaged one all-reduce at a time (`_one_at_a_time`)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    wrapped = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    if dist.get_backend() == "gloo":
        wrapped.register_comm_hook(None, _one_at_a_time)
    return wrapped


def _one_at_a_time(group, bucket):  # no annotations: DDP checks them, and these are strings
    """DDP's gradient averaging (a communication hook), waiting for each all-reduce to end
    before the next one starts.

    gloo runs the all-reduces DDP starts on two threads of its own, and two sparse all-reduces
    at once (the tables' gradients) now and then corrupt the heap: the worker dies with SIGSEGV
    or "malloc(): unaligned tcache chunk detected" inside gloo's sparse all-reduce. One at a
    time they do not. The cost is the overlap of communication with the backward pass, which
    two cores do not have to give anyway.
    """
    tensor = bucket.buffer().div_(dist.get_world_size(group))
    future = dist.all_reduce(tensor, group=group, async_op=True).get_future()
    future.wait()
    return future.then(lambda done: done.value()[0])


def all_reduce_sum(values: Tensor) -> Tensor:
    """The element-wise sum of `values` over all ranks (the tensor itself in one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


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

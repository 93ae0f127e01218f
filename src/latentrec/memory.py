"""Measuring memory: a report of what is in use now, and the peak of one training step.

`report()` does what the classic notebook helper did (list the GPU processes, collect garbage,
empty the CUDA cache) and adds allocated/reserved/peak bytes on CUDA and current/peak RSS on
the CPU. `measure_step()` runs one full optimiser step (every micro-batch of an accumulation
group, then the update) in a fresh subprocess and reports its peak beside the analytic parts:
parameters, gradients, optimiser state and the rest (activations and workspace). `plan()` picks
the largest micro-batch whose step fits a memory budget.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentrec.data import Ratings
from latentrec.errors import ConfigError, LatentrecError
from latentrec.models import MODELS, ModelConfig, build_model, config_from_json, model_class
from latentrec.optim import BETAS, EPS, OPTIMIZERS, StepRunner, make_optimizer
from latentrec.storage import write_atomically

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """`"2GiB"` -> 2147483648, `"512MB"` -> 512000000, `4096` -> 4096 bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 1:
            raise ConfigError(f"a memory size must be positive, got {text}")
        return text
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"cannot read the memory size {text!r}: write a number and a unit such as "
            "512MiB, 2GiB or 1.5GB"
        )
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value) or value >= 2**63:
        raise ConfigError(f"the memory size {text!r} is past any machine's; give one such as 2GiB")
    size = int(value)
    if size < 1:
        raise ConfigError(f"a memory size must be positive, got {text!r}")
    return size


def format_bytes(size: float) -> str:
    """`1536` -> `"1.5 KiB"`."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- report


@dataclass(frozen=True)
class MemoryReport:
    """Memory in use now. CUDA fields are None without CUDA."""

    rss_bytes: int
    peak_rss_bytes: int
    cuda_allocated_bytes: int | None = None
    cuda_reserved_bytes: int | None = None
    cuda_peak_bytes: int | None = None
    gpu_processes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def report() -> MemoryReport:
    """Collect garbage, empty the CUDA cache, and say what memory is in use."""
    gc.collect()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
    rss, peak = _rss()
    return MemoryReport(
        rss_bytes=rss,
        peak_rss_bytes=peak,
        cuda_allocated_bytes=torch.cuda.memory_allocated() if cuda else None,
        cuda_reserved_bytes=torch.cuda.memory_reserved() if cuda else None,
        cuda_peak_bytes=torch.cuda.max_memory_allocated() if cuda else None,
        gpu_processes=_gpu_processes() if cuda else [],
    )


def available_bytes() -> int | None:
    """Memory this process could still get: the system's MemAvailable, or the room left under
    a cgroup limit when that is smaller; None where neither can be read (not Linux)."""
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    if found is None:
        return None
    available = int(found.group(1)) * 1024
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit, used = (cgroup / "memory.max").read_text(), (cgroup / "memory.current").read_text()
        if limit.strip().isdigit():
            available = min(available, int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return max(available, 0)


def _rss() -> tuple[int, int]:
    """Current and peak resident set size of this process, in bytes."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: the peak is all the standard library offers
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return peak, peak
    fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return int(fields["VmRSS"]) * 1024, int(fields["VmHWM"]) * 1024


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _gpu_processes() -> list[dict[str, Any]]:
    """The processes using the GPUs, from NVML when installed, else from nvidia-smi."""
    try:
        import pynvml  # optional: the nvidia-ml-py package
    except ImportError:
        return _gpu_processes_smi()
    try:
        pynvml.nvmlInit()
        processes = []
        for device in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(device)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                processes.append({"gpu": device, "pid": proc.pid, "used_bytes": proc.usedGpuMemory})
        return processes
    except pynvml.NVMLError:
        return _gpu_processes_smi()


def _gpu_processes_smi() -> list[dict[str, Any]]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = "--query-compute-apps=gpu_uuid,pid,process_name,used_memory"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    processes = []
    for line in out.strip().splitlines():
        gpu, pid, name, used = (part.strip() for part in line.split(","))
        processes.append(
            {"gpu": gpu, "pid": int(pid), "name": name, "used_bytes": int(used) * 1024**2}
        )
    return processes


# ----------------------------------------------------------------------------- one step


@dataclass(frozen=True)
class StepConfig:
    """One training step to measure: a model, a micro-batch size and an accumulation, with the
    optimiser whose state the step keeps ("adamw": two moments per weight; "adagrad": one
    number per table row)."""

    model: ModelConfig
    batch_size: int
    accumulate: int = 1
    device: str = "cpu"
    dtype: str = "float32"
    optimizer: str = "adamw"
    l2: float = 0.0  # the per-rating penalty (`TrainConfig.l2`): its terms are part of a step

    def __post_init__(self) -> None:
        for name in ("batch_size", "accumulate"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.accumulate


@dataclass(frozen=True)
class MemoryUse:
    """The peak memory of one training step, measured, and its analytic parts.

    `peak_bytes` = parameters + optimiser state + what the step itself allocates (gradients,
    activations, workspace), measured. `other_bytes` is that step allocation less the analytic
    gradient bytes: activations and workspace. Excludes the Python and torch runtime and the
    rating data, which do not depend on the configuration.
    """

    model: str
    shape: str
    n_factors: int | None
    layers: tuple[int, ...] | None
    batch_size: int
    accumulate: int
    device: str
    peak_bytes: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    other_bytes: int
    step_bytes: int
    method: str
    optimizer: str = "adamw"

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.accumulate

    @property
    def non_parameter_bytes(self) -> int:
        """What the step needs beyond the weights and optimiser state it keeps."""
        return self.step_bytes

    @property
    def bytes_per_sample(self) -> float:
        """Step memory per row of a micro-batch."""
        return self.step_bytes / self.batch_size

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers) if self.layers else None
        data["effective_batch_size"] = self.effective_batch_size
        data["bytes_per_sample"] = self.bytes_per_sample
        return data


def sample_rows(ratings: Ratings, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`size` rows of the ratings (a seeded sample; with replacement if there are fewer)."""
    rng = np.random.default_rng(seed)
    if size <= len(ratings):
        rows = rng.permutation(len(ratings))[:size]
    else:
        rows = rng.integers(0, len(ratings), size)
    return {
        "user_index": ratings.user_index[rows],
        "item_index": ratings.item_index[rows],
        "rating": ratings.rating[rows].astype(np.float32),
    }


def measure_step(config: StepConfig, rows: dict[str, np.ndarray]) -> MemoryUse:
    """Peak memory of one training step, measured in a fresh subprocess.

    Args:
        rows: training rows (`sample_rows`) whose indexes lie within the model's tables;
            repeated when the step needs more.

    On CUDA the peak comes from `torch.cuda.max_memory_allocated`; on the CPU it is the peak RSS
    above a baseline taken in the subprocess just before the step (after a warm-up step, so
    the optimiser state and the allocator's pools already exist).
    """
    needed = config.effective_batch_size
    if len(rows["rating"]) == 0:
        raise ConfigError("measuring a step needs at least one row of data")
    with tempfile.TemporaryDirectory(prefix="latentrec-memory-") as folder:
        data_file = Path(folder) / "rows.npz"
        # np.resize repeats the rows when the step needs more than were sampled
        np.savez(data_file, **{k: np.resize(v, needed) for k, v in rows.items()})
        request = {
            "model": config.model.to_json(),
            # a model registered at run time is not in the fresh process's registry
            "model_class": _class_path(model_class(config.model.kind)),
            "batch_size": config.batch_size,
            "accumulate": config.accumulate,
            "device": config.device,
            "dtype": config.dtype,
            "optimizer": config.optimizer,
            "l2": config.l2,
            "rows": str(data_file),
        }
        result = subprocess.run(
            [sys.executable, "-m", "latentrec.memory"],
            input=json.dumps(request),
            env=_child_environment(),
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise LatentrecError(f"measuring a step of {config} failed: {last}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return _memory_use(config, measured)


def _child_environment() -> dict[str, str]:
    # glibc serves large blocks from mmap only above a threshold it raises as blocks are freed;
    # fixing it makes every large tensor its own mapping, returned to the system when freed,
    # so RSS follows what is live instead of what the heap happens to retain
    return os.environ | {"MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_TRIM_THRESHOLD_": "16384"}


def _memory_use(config: StepConfig, measured: dict[str, Any]) -> MemoryUse:
    model = config.model
    step = max(int(measured["step_bytes"]), 0)
    return MemoryUse(
        model=model.kind,
        shape=model.shape(),
        n_factors=getattr(model, "n_factors", None),
        layers=getattr(model, "layers", None),
        batch_size=config.batch_size,
        accumulate=config.accumulate,
        device=measured["device"],
        peak_bytes=measured["parameter_bytes"] + measured["optimizer_bytes"] + step,
        parameter_bytes=measured["parameter_bytes"],
        gradient_bytes=measured["gradient_bytes"],
        optimizer_bytes=measured["optimizer_bytes"],
        other_bytes=max(step - measured["gradient_bytes"], 0),
        step_bytes=step,
        method=measured["method"],
        optimizer=config.optimizer,
    )


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _child() -> None:
    """Subprocess side of measure_step: build, warm up, then measure one step."""
    request = json.loads(sys.stdin.read())
    if request["model"]["kind"] not in MODELS:
        module, name = request["model_class"].split(":")
        MODELS[request["model"]["kind"]] = getattr(importlib.import_module(module), name)
    config = config_from_json(request["model"])
    device = torch.device(request["device"])
    dtype = {"float32": torch.float32, "float64": torch.float64}[request["dtype"]]
    with np.load(request["rows"], allow_pickle=False) as rows:
        users = torch.from_numpy(rows["user_index"]).to(device)
        items = torch.from_numpy(rows["item_index"]).to(device)
        ratings = torch.from_numpy(rows["rating"]).to(device=device, dtype=dtype)
    torch.manual_seed(0)
    net = build_model(config).to(device=device, dtype=dtype).train()
    # the step's memory, not its values: any learning rate will do
    optimizer = make_optimizer(net, 1e-3, BETAS, EPS, 0.01, request["optimizer"])
    runner = StepRunner(
        net, users, items, ratings, request["batch_size"], optimizer, l2=request["l2"]
    )
    group = torch.arange(len(users), device=device)
    runner.step(group)  # warm-up: optimiser state and allocator pools now exist
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        runner.step(group)
        torch.cuda.synchronize(device)
        step_bytes, method = torch.cuda.max_memory_allocated(device) - baseline, "cuda"
    else:
        exact = _reset_peak_rss()
        baseline = _rss()[0]
        runner.step(group)
        step_bytes = _rss()[1] - baseline
        method = "rss" if exact else "rss-approximate"
    parameter_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    result = {
        "device": str(device),
        "method": method,
        "step_bytes": step_bytes,
        "parameter_bytes": parameter_bytes,
        # the state the optimiser keeps for every parameter (AdamW: two moments per weight;
        # row-wise Adagrad: one number per table row)
        "optimizer_bytes": sum(
            state.numel() * state.element_size()
            for state in (optimizer.state_for(p)["moments"] for p in net.parameters())
        ),
        "gradient_bytes": _gradient_bytes(net, users, items),
    }
    print(json.dumps(result))


def _gradient_bytes(net, users: torch.Tensor, items: torch.Tensor) -> int:
    """Bytes of the gradients one step holds: the sparse table gradients hold the rows the
    group touched (values and int64 indexes); dense layers hold one copy."""
    total = 0
    tables = net.tables()
    for index, names in ((users, net.user_tables), (items, net.item_tables)):
        touched = len(torch.unique(index))
        for name in names:
            weight = tables[name].weight
            total += touched * (weight.shape[1] * weight.element_size() + 8)
    table_ids = {id(t.weight) for t in tables.values()}
    total += sum(p.numel() * p.element_size() for p in net.parameters() if id(p) not in table_ids)
    return total


# ----------------------------------------------------------------------------- planner


@dataclass(frozen=True)
class Plan:
    """What the memory planner chose, the measurement behind it, and why."""

    batch_size: int
    accumulate: int
    memory: MemoryUse
    budget_bytes: int
    reason: str

    @property
    def effective_batch_size(self) -> int:
        return self.batch_size * self.accumulate


def plan(
    model: ModelConfig,
    rows: dict[str, np.ndarray],
    budget: int | str,
    effective_batch_size: int,
    device: str = "cpu",
    dtype: str = "float32",
    max_batch_size: int | None = None,
    optimizer: str = "adamw",
    l2: float = 0.0,
) -> Plan:
    """The largest micro-batch whose measured step fits `budget`, and the accumulation that
    reaches `effective_batch_size` with it.

    Two probe steps give a line (fixed bytes + bytes per row); the candidate it predicts is then
    measured for real, with the accumulation it needs, and shrunk until it fits.
    """
    budget_bytes = parse_size(budget)
    if effective_batch_size < 1:
        raise ConfigError(f"effective_batch_size must be >= 1, got {effective_batch_size}")
    ceiling = min(effective_batch_size, max_batch_size or effective_batch_size)
    small = measure_step(StepConfig(model, 1, 1, device, dtype, optimizer, l2), rows)
    large_size = min(ceiling, 1024)
    large = small
    if large_size > 1:
        large = measure_step(StepConfig(model, large_size, 1, device, dtype, optimizer, l2), rows)
    per_row = max((large.peak_bytes - small.peak_bytes) / max(large_size - 1, 1), 1.0)
    fixed = small.peak_bytes - per_row
    minimum = small.peak_bytes
    if budget_bytes < minimum:
        raise ConfigError(
            f"a memory budget of {format_bytes(budget_bytes)} is below what one sample needs "
            f"({format_bytes(minimum)}: {format_bytes(small.parameter_bytes)} of parameters, "
            f"{format_bytes(small.optimizer_bytes)} of optimiser state and the step itself); "
            f"give at least {math.ceil(minimum / 2**20)}MiB"
        )
    candidate = int(min(ceiling, max(1, (budget_bytes - fixed) // per_row)))
    over: list[str] = []
    for _ in range(6):
        accumulate = math.ceil(effective_batch_size / candidate)
        batch_size = math.ceil(effective_batch_size / accumulate)  # even micro-batches
        measured = measure_step(
            StepConfig(model, batch_size, accumulate, device, dtype, optimizer, l2), rows
        )
        if measured.peak_bytes <= budget_bytes or batch_size == 1:
            break
        over.append(f"{batch_size} x {accumulate} measured {format_bytes(measured.peak_bytes)}")
        shrink = budget_bytes / measured.peak_bytes
        candidate = max(1, min(batch_size - 1, int(batch_size * shrink * 0.95)))
    if measured.peak_bytes > budget_bytes:
        raise ConfigError(
            f"no micro-batch fits a budget of {format_bytes(budget_bytes)}: even batch size 1 "
            f"with accumulate {accumulate} peaks at {format_bytes(measured.peak_bytes)}"
        )
    reason = (
        f"a step costs about {format_bytes(fixed)} fixed (parameters, optimiser state) plus "
        f"{format_bytes(per_row)} per row of a micro-batch; micro-batch {batch_size} x "
        f"accumulate {accumulate} reaches the effective batch of {effective_batch_size} and "
        f"measured {format_bytes(measured.peak_bytes)} of the {format_bytes(budget_bytes)} budget"
        + (f" ({'; '.join(over)}: over budget)" if over else "")
    )
    return Plan(batch_size, accumulate, measured, budget_bytes, reason)


def plot(uses: list[MemoryUse], path: str | Path, title: str = "Peak memory of one step") -> Path:
    """A stacked bar chart of each configuration's memory, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    target = plot_path(path)
    labels = [_label(use) for use in uses]
    parts = {
        "parameters": [u.parameter_bytes for u in uses],
        "optimiser state": [u.optimizer_bytes for u in uses],
        "gradients": [min(u.gradient_bytes, u.step_bytes) for u in uses],
        "activations and workspace": [u.other_bytes for u in uses],
    }
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(uses) + 2), 4.8))
    bottom = np.zeros(len(uses))
    for name, values in parts.items():
        mib = np.array(values, dtype=float) / 2**20
        axes.bar(labels, mib, bottom=bottom, label=name)
        bottom += mib
    for x, use in enumerate(uses):
        axes.annotate(format_bytes(use.peak_bytes), (x, bottom[x]), ha="center", va="bottom")
    axes.set_ylabel("MiB")
    axes.set_title(f"{title} ({uses[0].device})" if uses else title)
    axes.legend()
    plt.setp(axes.get_xticklabels(), rotation=30, ha="right")
    figure.tight_layout()
    try:
        return save_plot(figure, target)
    finally:
        plt.close(figure)


# the PNG text key and value that mark a plot latentrec wrote (the only files it replaces)
PLOT_MARK = ("Software", "latentrec")


def save_plot(figure: Any, target: Path) -> Path:
    """Write a matplotlib figure to `target` (a path `plot_path` passed) as PNG, atomically,
    marked as latentrec's (`PLOT_MARK`) and checked again just before it replaces anything."""
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(temporary: Path) -> None:
        figure.savefig(temporary, format="png", dpi=120, metadata=dict([PLOT_MARK]))
        plot_path(target)  # a file that appeared meanwhile is not replaced

    write_atomically(target, write)
    return target


def _latentrec_plot(path: Path) -> bool:
    """Whether `path` is a PNG file latentrec wrote (it carries `PLOT_MARK`)."""
    from PIL import Image

    key, value = PLOT_MARK
    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get(key) == value
    except Exception:  # not an image Pillow reads, or not readable: not latentrec's
        return False


def plot_path(path: str | Path) -> Path:
    """The plot's path, checked before any measuring starts: a new file, or one latentrec
    wrote (never a file of the user's, nor a symbolic link)."""
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise ConfigError(f"the plot is written as PNG; give a file ending in .png, not {target}")
    if target.is_symlink():
        raise ConfigError(
            f"the plot path {target} is a symbolic link; latentrec replaces only plots it "
            "wrote: choose another --plot"
        )
    if target.is_dir():
        raise ConfigError(f"the plot path {target} is a directory; give a file ending in .png")
    if target.exists() and not (target.is_file() and _latentrec_plot(target)):
        raise ConfigError(
            f"{target} exists and is not a plot latentrec wrote; choose another --plot or remove it"
        )
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the plot's missing folders are created under this one
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write the plot {target}: {folder} is not a writable directory; "
            "choose another --plot"
        )
    return target


def _label(use: MemoryUse) -> str:
    return f"{use.model} {use.shape}\n{use.batch_size}x{use.accumulate}"


if __name__ == "__main__":
    _child()

"""torchrun + DDP: two gloo processes on loopback take the same steps as one process, and a run
whose worker is killed resumes from its last checkpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from safetensors.torch import load_file

from latentrec import distributed, fit, load_ratings
from latentrec.storage import CHECKPOINT_DIR, load_checkpoint

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="this torch build has no gloo process groups",
)
TESTS = Path(__file__).parent
# the script torchrun runs in the equivalence test; its cases are shared with the test
_spec = importlib.util.spec_from_file_location("ddp_worker", TESTS / "ddp_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def _torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        str(restarts),
        *args,
    ]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS), "LOGLEVEL": "WARNING"})
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT"):
        env.pop(name, None)
    return env


def test_outside_torchrun_everything_is_one_process():
    context = distributed.from_environment()
    assert (context.rank, context.world_size, context.is_main, context.active) == (
        0,
        1,
        True,
        False,
    )


class _Exited(Exception):
    pass


@pytest.mark.parametrize(("argv", "code"), [(["--version"], 0), (["recommend", "/no/model"], 2)])
def test_a_worker_that_joined_a_process_group_ends_without_the_interpreter_teardown(
    monkeypatch, argv, code
):
    """DDP leaves gloo threads behind; the command line ends such a worker with os._exit."""
    from latentrec import cli

    def fake_exit(status):
        raise _Exited(status)

    monkeypatch.setattr(distributed, "_joined", True)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(sys, "argv", ["latentrec", *argv])
    with pytest.raises(_Exited) as exited:
        cli.run()
    assert exited.value.args == (code,)


def test_two_ranks_take_the_same_steps_as_one_process_with_twice_the_batch(tmp_path):
    """After two epochs (each ending on a short step), 2 ranks x batch B equal 1 x 2B."""
    done = subprocess.run(
        _torchrun(str(TESTS / "ddp_worker.py"), str(tmp_path)),
        env=_environment(),
        timeout=240,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    data = worker.ratings()
    for name, (model, options) in worker.CASES.items():
        assert (tmp_path / f"{name}.world").read_text() == "2"
        single = dict(options, batch_size=options["batch_size"] * 2)
        net, _ = fit(data, model, engine="autograd", **single, **worker.EXACT)
        ranks = load_file(str(tmp_path / f"{name}.safetensors"))
        difference = max((v - ranks[k]).abs().max().item() for k, v in net.state_dict().items())
        assert difference < 1e-9, name
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert "the 2 processes read different training ratings" in report["different_data"]
        # the hook's one-block exchange sums sparse gradients of any size as all-reduce does
        assert report["exchange_error"] < 1e-6, report
        assert report["static_graph_error"] < 1e-12, report
        # workers run torch on one thread each and never start numba's thread pool
        assert report["torch_threads"] == 1, report
        assert not report["numba_pool_started"], report


SYNTHETIC = "synthetic:ratings=150000,users=3000,items=800,seed=3"
RUN = ["--data", SYNTHETIC, "--epochs", "3", "--batch-size", "256", "--seed", "7"]


def _workers(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_a_killed_worker_is_restarted_and_resumes_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "model"
    command = _torchrun(
        "-m",
        "latentrec",
        "train",
        *RUN,
        "--out",
        str(out),
        "--checkpoint-every",
        "40",
        "--json",
        restarts=3,
    )
    started = time.monotonic()
    launcher = subprocess.Popen(
        command,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: nothing outlives the test
    )
    killed = None
    try:
        while time.monotonic() - started < 180 and launcher.poll() is None:
            checkpoint = load_checkpoint(out / CHECKPOINT_DIR)
            if checkpoint is not None and checkpoint.meta["epoch"] >= 1:
                workers = _workers(launcher.pid)
                if len(workers) == 2:
                    killed = checkpoint.step
                    os.kill(workers[-1], signal.SIGKILL)  # mid-epoch, without warning
                    break
            time.sleep(0.05)
        try:
            stdout, stderr = launcher.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            stdout, stderr = launcher.communicate()
            pytest.fail(f"the restarted run did not finish in 240 s:\n{stderr[-3000:]}")
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert killed is not None, "the run ended before a worker could be killed"
    assert launcher.returncode == 0, stderr[-3000:]
    assert "resuming from the checkpoint at step" in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2
    # a step covers batch x accumulate x world size ratings
    assert (summary["batch_size"], summary["effective_batch_size"]) == (256, 512)
    assert summary["resumed_from_step"] >= killed
    # an uninterrupted run with the same seed: one process, the 2 ranks' batch together
    split = load_ratings(SYNTHETIC).split(test_fraction=0.1, seed=7)
    _, history = fit(split, "dot", epochs=3, batch_size=512, seed=7, progress=False)
    assert abs(summary["rmse"] - history.rmse) < 0.005
    assert not (out / CHECKPOINT_DIR).exists()  # the finished model replaced them

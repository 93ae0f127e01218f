"""Memory: sizes, the report, measuring one step in a subprocess, and the planner."""

from __future__ import annotations

import pytest

from latentrec import ConfigError, fit
from latentrec.memory import (
    MemoryReport,
    StepConfig,
    format_bytes,
    measure_step,
    parse_size,
    plan,
    report,
    sample_rows,
)
from latentrec.training import make_configs


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GiB", 2 * 1024**3),
        ("512MiB", 512 * 1024**2),
        ("1.5GB", 1_500_000_000),
        ("4096", 4096),
        ("64 kib", 65536),
        (1000, 1000),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["2 gigs", "", "GiB", "-5MiB", "0", "1.5 parsecs"])
def test_unparsable_sizes_say_how_to_write_one(text):
    with pytest.raises(ConfigError, match="memory size"):
        parse_size(text)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"


def test_report_collects_and_reads_rss():
    now = report()
    assert isinstance(now, MemoryReport)
    assert 0 < now.rss_bytes <= now.peak_rss_bytes
    assert "rss_bytes" in now.to_json()


@pytest.fixture(scope="module")
def nn_config(board):
    return make_configs(board[0], "nn", {"layers": (512, 256)})[0]


@pytest.fixture(scope="module")
def board_rows(board):
    return sample_rows(board[0], 16384)


def test_a_larger_micro_batch_needs_more_step_memory(nn_config, board_rows):
    small = measure_step(StepConfig(nn_config, 64), board_rows)
    large = measure_step(StepConfig(nn_config, 16384), board_rows)
    assert small.parameter_bytes == large.parameter_bytes > 0
    assert small.optimizer_bytes == 2 * small.parameter_bytes
    # 16384 rows x (512 + 256) activations x 4 bytes is 48 MiB at the very least
    assert large.step_bytes - small.step_bytes > 40 * 2**20
    assert large.peak_bytes == large.parameter_bytes + large.optimizer_bytes + large.step_bytes
    assert large.to_json()["effective_batch_size"] == 16384


def test_the_optimiser_state_is_what_the_chosen_optimiser_keeps(board, board_rows):
    """AdamW keeps two moments per weight; row-wise Adagrad (the dot model's default) one
    number per table row: the report and the planner count what the step really keeps."""
    config = make_configs(board[0], "dot", {"n_factors": 50})[0]
    rows = config.n_users + config.n_items
    adamw = measure_step(StepConfig(config, 64, optimizer="adamw"), board_rows)
    adagrad = measure_step(StepConfig(config, 64, optimizer="adagrad"), board_rows)
    assert adamw.optimizer_bytes == 2 * adamw.parameter_bytes
    # one float32 per row of each of the four tables (factors and bias, users and items)
    assert adagrad.optimizer_bytes == 2 * rows * 4
    assert (adamw.optimizer, adagrad.optimizer) == ("adamw", "adagrad")
    assert adagrad.peak_bytes < adamw.peak_bytes
    with pytest.raises(ConfigError, match="optimizer must be one of adamw, adagrad, got 'sgd'"):
        StepConfig(config, 64, optimizer="sgd")


def test_accumulation_cuts_the_step_memory(nn_config, board_rows):
    whole = measure_step(StepConfig(nn_config, 16384, 1), board_rows)
    accumulated = measure_step(StepConfig(nn_config, 2048, 8), board_rows)
    assert accumulated.effective_batch_size == whole.effective_batch_size
    assert accumulated.step_bytes * 3 < whole.step_bytes


def test_plan_fits_the_budget_and_reaches_the_effective_batch(nn_config, board_rows):
    chosen = plan(nn_config, board_rows, "96MiB", effective_batch_size=16384)
    assert chosen.memory.peak_bytes <= 96 * 2**20
    assert chosen.batch_size * chosen.accumulate >= 16384
    assert chosen.accumulate > 1
    assert "per row" in chosen.reason


def test_a_budget_below_one_sample_fails_with_the_minimum(nn_config, board_rows):
    with pytest.raises(ConfigError, match=r"below what one sample needs .* give at least"):
        plan(nn_config, board_rows, "1KiB", effective_batch_size=1024)


def test_fit_with_a_memory_budget_records_its_plan(board):
    _, history = fit(
        board, "dot", epochs=1, memory_budget="64MiB", effective_batch_size=256, progress=False
    )
    assert history.plan is not None
    assert history.train_config.batch_size == history.plan.batch_size
    assert history.train_config.samples_per_step >= 256


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"memory_budget": "2 gigs"}, "memory size"),
        ({"accumulate": 0}, "accumulate"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 64, "effective_batch_size": 32}, "effective_batch_size"),
    ],
)
def test_bad_accumulation_options(board, options, needle):
    with pytest.raises(ConfigError, match=needle):
        fit(board, "dot", progress=False, **options)

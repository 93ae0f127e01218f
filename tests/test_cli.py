"""The command line end to end, and the one-line errors a user gets instead of tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentrec import load, load_ratings
from latentrec.cli import app
from latentrec.storage import umask
from tests.test_contract import one_error_line

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "model"
    result = invoke("train", "--epochs", "2", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    return out


def test_train_prints_table_and_json():
    result = invoke("train", "--epochs", "2", "--json", "--batch-size", "2048")
    assert result.exit_code == 0, result.output
    assert "test RMSE" in result.output and "epoch" in result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "rmse",
        "mae",
        "epochs",
        "train_seconds",
        "ratings_per_second",
        "n_train",
        "n_test",
        "model_dir",
    ):
        assert key in summary
    assert summary["epochs"] == 2 and summary["n_train"] + summary["n_test"] == 100_836
    assert summary["model_dir"] is None
    assert 0.7 < summary["rmse"] < 1.2
    assert summary["order"] == "shuffled"


def test_train_says_which_epoch_order_it_trained_in():
    data = "synthetic:ratings=40000,users=20000,items=9000,seed=3"  # 3 x 2 cells
    result = invoke("train", "--data", data, "--order", "blocked", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    assert "(fused engine, adagrad, blocked order)" in result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["order"] == "blocked"


def test_recommend_and_similar_with_titles(trained_dir: Path):
    result = invoke("recommend", trained_dir, "--user", "1", "-k", "5", "--json")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(items) == 5 and {"item_id", "title", "score"} <= set(items[0])
    assert all(item["title"] for item in items)
    result = invoke("similar", trained_dir, "--item", "1", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    assert "Toy Story" in result.output
    assert len(json.loads(result.stdout.strip().splitlines()[-1])) == 3


def test_evaluate_a_saved_model(trained_dir: Path, ml25m_dir: Path):
    result = invoke("evaluate", trained_dir, "--data", ml25m_dir, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["n"] == 7 and summary["rmse"] > 0


def test_train_nn_on_a_csv_with_a_separate_test_file(tmp_path: Path):
    train = tmp_path / "train.csv"
    test = tmp_path / "test.csv"
    rows = [f"{u},{i},{1 + (u * i) % 5}" for u in range(30) for i in range(20)]
    train.write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    test.write_text("user,item,rating\n1,2,3\n999,1,4\n")
    result = invoke(
        "train",
        "--data",
        train,
        "--test",
        test,
        "--model",
        "nn",
        "--layers",
        "8",
        "--epochs",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert "1 users and 0 items appear only in the test set" in result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["n_test"] == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--data", "/no/such.csv"], "no such file"),
        (["train", "--model", "svd"], "model must be one of"),
        (["train", "--epochs", "0"], "epochs must be"),
        (["train", "--layers", "a,b", "--model", "nn"], "--layers must be"),
        (["train", "--factors", "8", "--model", "nn"], "--factors applies"),
        (["train", "--split", "time", "--last-n", "0"], "last_n"),
        (["train", "--device", "tpu"], "device must be"),
        (["recommend", "/no/model", "--user", "1"], "no model directory"),
        # seeds numpy and torch cannot take were a traceback from deep inside (review)
        (["train", "--seed", "-1"], "'--seed'"),
        (["train", "--seed", str(2**64 - 1)], "'--seed'"),
        (["tune", "--seed", "-1"], "'--seed'"),
        (["train", "--data", "synthetic:ratings=100,seed=-1"], "seed must be a whole number"),
        (["memory", "--data", "synthetic:ratings=100,seed=-1"], "seed must be a whole number"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, needle):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_unknown_user_and_item(trained_dir: Path):
    result = invoke("recommend", trained_dir, "--user", "424242")
    assert result.exit_code == 2
    assert "unknown user id 424242" in result.output and "610 users" in result.output
    result = invoke("similar", trained_dir, "--item", "abc")
    assert result.exit_code == 2 and "unknown item id" in result.output


def test_malformed_line_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating\n1,2,4\n1,3,x\n")
    result = invoke("train", "--data", bad)
    assert result.exit_code == 2
    assert "'x'" in result.output and "Traceback" not in result.output


def test_failed_training_keeps_the_earlier_model(trained_dir: Path):
    before = (trained_dir / "model.safetensors").read_bytes()
    result = invoke("train", "--out", trained_dir, "--lr", "-1")
    assert result.exit_code == 2
    assert (trained_dir / "model.safetensors").read_bytes() == before


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and "latentrec" in result.output


def test_accumulation_gives_the_large_batch_result():
    """128 x 8 and 1024 x 1 take the same steps: their test RMSEs agree."""
    results = []
    for batch, accumulate in ((128, 8), (1024, 1)):
        result = invoke(
            "train",
            "--epochs",
            "2",
            "--seed",
            "42",
            "--batch-size",
            batch,
            "--accumulate",
            accumulate,
            "--json",
        )
        assert result.exit_code == 0, result.output
        results.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert results[0]["effective_batch_size"] == results[1]["effective_batch_size"] == 1024
    assert abs(results[0]["rmse"] - results[1]["rmse"]) < 0.0005


def test_memory_now():
    result = invoke("memory", "--now", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["rss_bytes"] > 0


def test_memory_table_json_and_plot(tmp_path: Path):
    plot = tmp_path / "memory.png"
    result = invoke(
        "memory",
        "--model",
        "dot",
        "--factors",
        "8",
        "--batch-size",
        "64,4096",
        "--plot",
        plot,
        "--json",
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["batch_size"] for row in rows] == [64, 4096]
    for key in ("model", "batch_size", "accumulate", "effective_batch_size", "peak_bytes"):
        assert key in rows[0]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memory_json_names_what_each_solved_model_needs():
    # regression (review): with solved models alone the last line held no JSON
    result = invoke("memory", "--model", "ease,als", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(row["model"], row["solved"]) for row in rows] == [("ease", True), ("als", True)]
    assert rows[0]["n_items"] == 9724 and rows[0]["solve_bytes"] > 9724**2 * 4


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["memory", "--batch-size", "0"], "whole numbers >= 1"),
        (["memory", "--accumulate", "x"], "comma-separated whole numbers"),
        (["memory", "--model", "svd"], "model must be one of dot, nn"),
        (["memory", "--plot", "chart.jpg", "--batch-size", "8"], "PNG"),
        (["train", "--memory-budget", "2 gigs"], "cannot read the memory size '2 gigs'"),
        (["train", "--accumulate", "0"], "accumulate must be"),
        (["train", "--batch-size", "64", "--effective-batch-size", "32"], "effective_batch_size"),
        (["train", "--memory-budget", "1KiB", "--effective-batch-size", "1024"], "give at least"),
    ],
)
def test_memory_user_errors(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_recommend_for_a_new_user(trained_dir: Path):
    result = invoke(
        "recommend", trained_dir, "--new-user", "318:5,296:4.5,1:4,424242:3", "-k", "5", "--json"
    )
    assert result.exit_code == 0, result.output
    assert "ignoring 1 item id" in result.output
    items = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(items) == 5 and {318, 296, 1}.isdisjoint(item["item_id"] for item in items)


def test_similar_by_title(trained_dir: Path):
    result = invoke("similar", trained_dir, "--title", "toy story", "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    assert "Toy Story (1995)" in result.output


def test_explain_tables_and_map(trained_dir: Path, tmp_path: Path):
    plot = tmp_path / "map.png"
    result = invoke(
        "explain", trained_dir, "--user", "1", "--item", "2959", "--plot", plot, "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(summary["top_biases"]) == 10 and len(summary["map"]) == 50
    assert all(reason["rating"] > 3 for reason in summary["because"])
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_plots_replace_only_plots_latentrec_wrote(trained_dir: Path, tmp_path: Path):
    # regression (review): --plot replaced any file, and wrote through a symbolic link
    from matplotlib import pyplot as plt

    theirs = tmp_path / "theirs.png"
    figure = plt.figure()
    figure.savefig(theirs)  # a PNG, but not latentrec's
    plt.close(figure)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    link = tmp_path / "link.png"
    link.symlink_to(notes)
    kept = {path: path.read_bytes() for path in (theirs, notes)}
    for plot, needle in (
        (theirs, "exists and is not a plot latentrec wrote; choose another --plot or remove it"),
        (link, "is a symbolic link; latentrec replaces only plots it wrote"),
    ):
        for command in (
            ["explain", trained_dir],
            ["memory", "--factors", "4", "--batch-size", "8"],
        ):
            result = invoke(*command, "--plot", plot)
            assert result.exit_code == 2, result.output
            assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert {path: path.read_bytes() for path in (theirs, notes)} == kept and link.is_symlink()
    ours = tmp_path / "map.png"
    for _ in range(2):  # its own plot is replaced
        result = invoke("explain", trained_dir, "--plot", ours)
        assert result.exit_code == 0, result.output
    assert ours.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_new_user_rating_an_item_twice(trained_dir: Path):
    # regression (review): the second rating silently replaced the first
    result = invoke("recommend", trained_dir, "--new-user", "1:5,1:3")
    assert result.exit_code == 2 and "rates item '1' twice" in result.output


def test_explain_fails_on_an_unknown_item_before_any_table(trained_dir: Path, tmp_path: Path):
    # regression (noticed): the bias tables were printed, then the error
    plot = tmp_path / "map.png"
    for extra in ((), ("--plot", plot)):
        result = invoke("explain", trained_dir, "--user", "1", "--item", "999999", *extra)
        assert result.exit_code == 2
        assert result.output.strip().startswith("error: unknown item id 999999"), result.output
    assert not plot.exists()


def test_explain_names_an_untitled_item_by_its_id(tmp_path: Path):
    # regression (review): the heading read "why user 3 gets None"
    data = tmp_path / "untitled.csv"
    rows = [f"{u},{i},{(u * i) % 5 + 1}" for u in range(1, 21) for i in range(1, 16) if (u + i) % 3]
    data.write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    model = tmp_path / "model"
    assert invoke("train", "--data", data, "--epochs", "1", "--out", model).exit_code == 0
    result = invoke("explain", model, "--user", "3", "--item", "5", "-n", "2")
    assert result.exit_code == 0, result.output
    assert "why user 3 gets 5" in result.output


def test_evaluate_reads_metric_names_as_written_once(trained_dir: Path):
    # regression (review): ndcg@010 and ndcg@<huge> were tracebacks; "" an empty table
    result = invoke("evaluate", trained_dir, "--metrics", "ndcg@010,ndcg@10", "--json")
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in json.loads(result.stdout.strip().splitlines()[-1])
    for metrics, needle in (
        ("ndcg@" + "9" * 20, "unknown metric"),
        ("ndcg@\u00b2", "unknown metric"),
        (",", "--metrics names no metric"),
    ):
        assert needle in one_error_line(invoke("evaluate", trained_dir, "--metrics", metrics))


def test_evaluate_ranking_metrics(trained_dir: Path):
    result = invoke(
        "evaluate", trained_dir, "--metrics", "rmse,ndcg@10,recall@10,precision@10", "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # every bundled rating: those the model trained on are no candidates, so not relevant
    # either; the users scored are those with held-out ratings
    train, every = load(trained_dir).ratings, load_ratings("movielens-small")
    trained = set(zip(train.user_ids.tolist(), train.item_ids.tolist(), strict=True))
    pairs = zip(every.user_ids.tolist(), every.item_ids.tolist(), strict=True)
    held_out = {u for u, i in pairs if (u, i) not in trained}
    assert 0 <= summary["ndcg@10"] <= 1 and summary["users"] == len(held_out) < 610


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["recommend", "--new-user", "318=5"], "item:rating pairs"),
        (["recommend", "--new-user", "318:9"], "outside the model's range"),
        (["recommend", "--new-user", "999999:4"], "none of the 1 rated item ids"),
        (["recommend", "--user", "1", "--new-user", "1:4"], "exactly one of"),
        (["recommend", "--user", "1", "-k", "99999"], "-k"),
        (["similar", "--title", "toy stroy"], "close matches: Toy Story"),
        (["evaluate", "--metrics", "ndcg@x"], "unknown metric"),
        (["explain", "--user", "1"], "go together"),
    ],
)
def test_recommend_user_errors(trained_dir: Path, args, needle):
    result = invoke(args[0], trained_dir, *args[1:])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "model"
    args = ["train", "--epochs", "2", "--checkpoint-every", "60", "--json", "--out"]
    whole = runner.invoke(app, [*args, str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # after the last checkpoint, before the model is saved

    monkeypatch.setattr("latentrec.cli.save", killed)
    interrupted = runner.invoke(app, [*args, str(out)])
    assert interrupted.exit_code == 130
    assert "the checkpoint at step 120 is kept" in interrupted.output
    assert f"latentrec train --resume {out}" in interrupted.output
    assert not (out / "config.json").exists()
    monkeypatch.undo()
    # regression (review): the run resumed from, and saved into, the --out it was started
    # with, whatever directory --resume named; options given with --resume were ignored
    moved = tmp_path / "moved"
    out.rename(moved)
    refused = runner.invoke(app, ["train", "--resume", str(moved), "--epochs", "4"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "leave out --epochs" in refused.stderr.strip().splitlines()[-1]
    # regression (review): the same command again discarded the checkpoint and started over
    again = runner.invoke(app, [*args, str(moved)])
    assert "holds the checkpoint of an interrupted run (step 120)" in one_error_line(again)
    assert f"`latentrec train --resume {moved}`" in again.stderr
    kept = sorted(p.name for p in (moved / "checkpoint").iterdir())
    assert kept == ["step-000000120.json", "step-000000120.safetensors"]
    modes = {(moved / "checkpoint" / name).stat().st_mode & 0o777 for name in kept}
    assert modes == {0o666 & ~umask()}  # the tensors too, not safetensors' 0600
    # ... and --resume into a directory holding another file trained first, then refused
    (moved / "notes.txt").write_text("mine")
    foreign = runner.invoke(app, ["train", "--resume", str(moved)])
    assert "a resumed run saves its model there: move" in one_error_line(foreign)
    assert "resuming" not in foreign.output
    (moved / "notes.txt").unlink()
    resumed = runner.invoke(app, ["train", "--resume", str(moved), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert not out.exists()
    out = moved
    assert "resuming from the checkpoint at step 120 (epoch 2, step 31 of 89)" in resumed.output
    first = json.loads(whole.output.strip().splitlines()[-1])
    second = json.loads(resumed.output.strip().splitlines()[-1])
    assert second["resumed_from_step"] == 120
    assert second["rmse"] == pytest.approx(first["rmse"], abs=1e-6)
    assert (out / "config.json").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--checkpoint-every", "10"], "--checkpoint-every needs --out"),
        (["train", "--resume", "nowhere"], "no checkpoint in nowhere"),
        (["train", "--engine", "fused", "--model", "nn"], "the nn model trains with autograd"),
        (["train", "--optimizer", "sgd"], "optimizer must be one of adamw, adagrad, got 'sgd'"),
        (["train", "--model", "ease", "--optimizer", "adamw"], "the ease model is solved"),
        (["train", "--order", "sorted"], "order must be one of shuffled, blocked, got 'sorted'"),
        (["train", "--model", "als", "--order", "blocked"], "the als model is solved"),
        (["train", "--l2", "-1"], "l2 must be zero or positive, got -1.0"),
        (
            ["train", "--model", "bayes", "--l2", "0.1"],
            "--l2 applies to the dot, nn, ease and als models, not bayes",
        ),
        # regression (review): options the run would ignore, taken silently
        (["train", "--last-n", "1"], "last_n and cutoff choose the time split's test rows"),
        (["train", "--split", "time", "--cutoff", "9", "--test-fraction", "0.5"], "time split"),
        (["train", "--relevant-min", "4"], "the dot model is scored by RMSE"),
        (["train", "--rating-range=1,1e39"], "the largest rating float32"),
        (["train", "--data", "synthetic:ratings=500,noise=-1"], "noise must be 0 or more"),
        # regression (review): tracebacks, exit 1, or a value silently cut
        (["train", "--data", "synthetic:ratings=7.9"], "ratings must be a whole number"),
        (["train", "--data", "synthetic:ratings=1e400"], "ratings must be a whole number"),
        (["train", "--memory-budget", "9" * 400 + "GiB"], "is past any machine's"),
        (["memory", "--device", "foo"], "device must be auto, cpu or cuda, got 'foo'"),
        (["memory", "--model", ","], "--model names no model"),
        (["memory", "--batch-size", "8192", "--accumulate", "4096"], "a step of 33,554,432"),
        (["memory", "--accumulate", "1" + "0" * 20], "whole numbers up to 16,777,216"),
        (["tune", "--out", "x.json", "--metric", "ndcg@\u00b2"], "unknown metric 'ndcg@\u00b2'"),
    ],
)
def test_checkpoint_and_engine_mistakes_end_in_one_line(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert "Traceback" not in result.output


def test_a_bad_optimizer_is_refused_before_the_data_is_read():
    result = runner.invoke(app, ["train", "--optimizer", "sgd"])
    assert result.exit_code == 2
    assert "appear only in the test set" not in result.output  # the split never happened


@pytest.fixture(scope="module")
def markup_dir(tmp_path_factory) -> Path:
    """A MovieLens-layout directory whose titles look like rich markup."""
    folder = tmp_path_factory.mktemp("markup")
    rows = [(u, i, float((u * i) % 5 + 1)) for u in range(1, 9) for i in range(1, 7)]
    lines = "".join(f"{u},{i},{r}\n" for u, i, r in rows)
    (folder / "ratings.csv").write_text("userId,movieId,rating\n" + lines)
    titles = [
        "Blade Runner [director's cut]",
        "[/x] broken",
        "[bold]Bold[/bold]",
        ":smile: B",
        "Half $x^$ a",
        "Clear\x1b[2J\x1b]0;title\x07 end",
    ]
    movies = "".join(f'{i},"{titles[i - 1]}",Drama\n' for i in range(1, 7))
    (folder / "movies.csv").write_text("movieId,title,genres\n" + movies)
    out = folder / "model"
    result = invoke("train", "--data", folder, "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_markup_in_titles_is_printed_verbatim(markup_dir: Path):
    # regression (issue 14): "[director's cut]" vanished from tables, "[/x]" crashed
    result = invoke("similar", markup_dir, "--item", "1", "-k", "5")
    assert result.exit_code == 0, result.output
    for title in ("[director's cut]", "[/x] broken", "[bold]Bold[/bold]", ":smile: B", "$x^$"):
        assert title in result.output
    # control characters are shown, never sent: an escape sequence would drive the terminal
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "Clear\\x1b[2J\\x1b]0;title\\x07 end" in result.output


def test_titles_are_drawn_as_text_on_the_item_map(markup_dir: Path, tmp_path: Path):
    # regression (review): "$x^$" was parsed as matplotlib mathtext and the plot crashed
    result = invoke("explain", markup_dir, "--plot", tmp_path / "map.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "map.png").stat().st_size > 0


@pytest.mark.parametrize("user", ["[/x]", "[bold]hi", "[red]", ":smile:"])
def test_markup_in_user_input_is_printed_verbatim(markup_dir: Path, user: str):
    # regression (issue 14): --user "[/x]" ended in rich.errors.MarkupError (exit 1)
    result = invoke("recommend", markup_dir, "--user", user)
    assert result.exit_code == 2, result.output
    assert f"unknown user id {user!r}" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["recommend"], "Missing argument"),
        (["recommend", "x", "-k", "0"], "'-k' / '--k'"),
        (["train", "--bogus"], "No such option: --bogus"),
        (["train", "--epochs", "many"], "'--epochs'"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args, needle):
    # regression (issue 14): typer's usage errors were a five-line box
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert "--help" in lines[0]


def test_usage_errors_from_the_installed_command_are_one_line():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "latentrec", "recommend", "x", "-k", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "error:" in done.stderr


def test_os_errors_are_one_line_with_exit_2(trained_dir: Path):
    # regression (issue 14): OS errors exited 1 with raw errno text
    for plot in ("/dev/null/map.png", "/dev/null/more/map.png"):
        result = invoke("explain", trained_dir, "--plot", plot)
        assert result.exit_code == 2, result.output
        assert result.output.strip() == (
            f"error: cannot write the plot {plot}: /dev/null is not a writable directory; "
            "choose another --plot"
        )


def test_an_os_error_met_late_is_one_line_with_exit_2(tmp_path: Path, monkeypatch):
    import errno

    from latentrec import cli

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model"))

    monkeypatch.setattr(cli, "save", full_disk)
    result = invoke("train", "--epochs", "1", "--out", tmp_path / "model")
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'model'}: No space left on device"
    )


def test_factors_beyond_memory_are_refused_before_training():
    result = invoke("train", "--factors", "1000000000", "--epochs", "1")
    assert result.exit_code == 2, result.output
    assert "memory is available; use smaller --factors" in result.output


def test_diverged_training_keeps_the_earlier_model(trained_dir: Path):
    # regression (issue 14): --lr 1e30 exited 0 and saved a NaN model
    before = (trained_dir / "model.safetensors").read_bytes()
    result = invoke("train", "--out", trained_dir, "--lr", "1e30", "--epochs", "2")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("error: training diverged")
    assert (trained_dir / "model.safetensors").read_bytes() == before


def test_json_output_is_strict_json(capsys):
    from latentrec.cli import print_json

    print_json({"rmse": float("nan"), "per_epoch": [{"loss": float("inf")}], "n": 3})
    line = capsys.readouterr().out
    assert json.loads(line) == {"rmse": None, "per_epoch": [{"loss": None}], "n": 3}
    assert "NaN" not in line and "Infinity" not in line


def test_rating_range_option(tmp_path: Path):
    data = tmp_path / "scale.csv"
    rows = [(u, i, float((u + i) % 10 + 1)) for u in range(30) for i in range(20)]
    data.write_text("user,item,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    out = tmp_path / "model"
    result = invoke(
        "train", "--data", data, "--rating-range", "0,11", "--epochs", "1", "--out", out
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["rating_range"] == [0.0, 11.0]
    assert config["model"]["y_range"] == pytest.approx([-11 / 9, 11 + 11 / 9])
    # a new user may use the whole declared scale, not only what the training ratings used
    result = invoke("recommend", out, "--new-user", "1:0,2:11", "-k", "3")
    assert result.exit_code == 0, result.output
    result = invoke("recommend", out, "--new-user", "1:12")
    assert result.exit_code == 2 and "outside the model's range 0..11" in result.output
    for bad, needle in (("5,11", "does not cover"), ("a,b", "LOW,HIGH"), ("3,1", "LOW < HIGH")):
        result = invoke("train", "--data", data, "--rating-range", bad, "--epochs", "1")
        assert result.exit_code == 2 and needle in result.output, result.output


def test_error_lines_quote_the_input_exactly(trained_dir: Path):
    # regression (review): runs of spaces in the user's input were collapsed
    result = invoke("recommend", trained_dir, "--user", "a    b")
    assert result.exit_code == 2 and "unknown user id 'a    b'" in result.output


def test_no_arguments_print_the_help_once():
    result = invoke()
    assert result.exit_code == 2 and result.output.count("Usage: ") == 1


def test_a_learning_rate_beyond_the_arithmetic_is_refused():
    # regression (review): --lr 1e38 overflowed Adam's first step with a traceback
    result = invoke("train", "--lr", "1e38", "--engine", "autograd", "--epochs", "1")
    assert result.exit_code == 2 and "lr must be at most" in result.output


def test_a_batch_beyond_memory_is_refused_before_training():
    # regression (review): the nn step's activations (100000 x 100000) were not counted
    result = invoke(
        "train", "--model", "nn", "--layers", "100000", "--batch-size", "100000", "--epochs", "1"
    )
    assert result.exit_code == 2 and "smaller --batch-size" in result.output


def test_an_interrupted_torchrun_run_names_the_torchrun_command(tmp_path, monkeypatch):
    # regression (review): the hint named `latentrec train --resume`, which a checkpoint
    # written by 2 processes refuses
    from latentrec import distributed

    monkeypatch.setattr(distributed, "from_environment", lambda: distributed.Context(0, 2))

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("latentrec.cli._train_run", interrupted)
    written = iter([None, {"step": 40, "world_size": 2}])  # none before, one once interrupted
    monkeypatch.setattr("latentrec.cli.checkpoints.notes_of", lambda _where: next(written))
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--checkpoint-every", "20", "--out", str(out)])
    assert result.exit_code == 130
    hint = f"`torchrun <the options it started with> -m latentrec train --resume {out}` (2 "
    assert hint in result.stderr.replace("\n", " ")

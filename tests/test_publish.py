"""Publishing versions to a folder (`publish`, `train --publish`) and swapping them into a
running service (`ModelHolder`, `latentrec serve FOLDER/current`): with real files, real
threads and a real server process."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from latentrec import fit
from latentrec.cli import app as cli
from latentrec.errors import ModelFileError
from latentrec.recommend import Recommender
from latentrec.reloading import ModelHolder
from latentrec.serving import create_app
from latentrec.storage import CURRENT, load, publish

from .conftest import checkerboard
from .test_browser import _free_port

VERSION = r"v-\d{8}-\d{6}-[0-9a-f]{6}"


@pytest.fixture(scope="module")
def models():
    """Two dot models of the checkerboard that differ (other seeds, other factors), and
    their training ratings."""
    train, _ = checkerboard()
    first, _ = fit(train, "dot", epochs=2, n_factors=8, seed=1, progress=False)
    second, _ = fit(train, "dot", epochs=2, n_factors=4, seed=2, progress=False)
    return first, second, train


def _scores(client: TestClient) -> list[float]:
    response = client.get("/users/100/recommendations", params={"k": 5})
    assert response.status_code == 200, response.text
    return [r["score"] for r in response.json()]


# ----------------------------------------------------------------------------- publish


def test_publish_twice_keeps_both_and_points_current_at_the_newest(models, tmp_path):
    first, second, train = models
    folder = tmp_path / "models"
    one = publish(first, folder, train, {"run": 1})
    two = publish(second, folder, train, {"run": 2})
    assert one != two and one.parent == two.parent == folder
    versions = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert versions == sorted([one.name, two.name, CURRENT])
    current = folder / CURRENT
    assert current.is_symlink() and os.readlink(current) == two.name  # relative: movable
    assert load(current).info == {"run": 2}
    assert load(one).info == {"run": 1}  # the earlier version is kept, untouched
    assert re.fullmatch(VERSION, one.name) and re.fullmatch(VERSION, two.name)


def test_current_is_always_a_complete_model_while_publishing(models, tmp_path):
    """A reader resolving `current` and loading it while versions are published in a loop
    never finds it missing, dangling or torn (the link is replaced by one rename)."""
    first, second, train = models
    folder = tmp_path / "models"
    publish(first, folder, train)
    done = threading.Event()
    failures: list[str] = []

    def read() -> None:
        while not done.is_set():
            try:
                target = os.readlink(folder / CURRENT)
                load(folder / target)
            except (OSError, ModelFileError) as err:
                failures.append(repr(err))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for round_ in range(12):
            publish(second if round_ % 2 else first, folder, train)
    finally:
        done.set()
        for reader in readers:
            reader.join()
    assert failures == []
    assert len([p for p in folder.glob("v-*")]) == 13
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no debris left


@pytest.mark.parametrize("kind", ["directory", "file", "foreign link"])
def test_publish_refuses_a_current_it_did_not_make(models, tmp_path, kind):
    first, _, train = models
    folder = tmp_path / "models"
    folder.mkdir()
    current = folder / CURRENT
    if kind == "directory":
        current.mkdir()
        (current / "notes.txt").write_text("mine")
    elif kind == "file":
        current.write_text("mine")
    else:
        (folder / "elsewhere").mkdir()
        current.symlink_to("elsewhere")
    with pytest.raises(ModelFileError, match="latentrec"):
        publish(first, folder, train)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CURRENT] + (["elsewhere"] if kind == "foreign link" else [])
    )  # nothing written, nothing removed
    if kind == "directory":
        assert (current / "notes.txt").read_text() == "mine"


def test_publish_refuses_a_file_and_a_model_directory(models, tmp_path):
    first, _, train = models
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFileError, match="is a file"):
        publish(first, tmp_path / "file", train)
    version = publish(first, tmp_path / "models", train)
    with pytest.raises(ModelFileError, match="model directory"):
        publish(first, version, train)


def test_publish_leaves_other_entries_of_the_folder_alone(models, tmp_path):
    first, _, train = models
    folder = tmp_path / "models"
    (folder / "demo").mkdir(parents=True)
    (folder / "demo" / "notes.txt").write_text("mine")
    publish(first, folder, train)
    assert (folder / "demo" / "notes.txt").read_text() == "mine"


# ----------------------------------------------------------------------------- train --publish


def test_train_publish_and_the_refusals(ml25m_dir, tmp_path):
    runner = CliRunner()
    folder = tmp_path / "models"
    data = ["--data", str(ml25m_dir / "ratings.csv"), "--epochs", "1", "--test-fraction", "0.3"]
    result = runner.invoke(cli, ["train", *data, "--publish", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    target = os.readlink(folder / CURRENT)
    assert json.loads(result.stdout.splitlines()[-1])["model_dir"] == str(folder / target)
    result = runner.invoke(cli, ["train", *data, "--publish", str(folder)])
    assert result.exit_code == 0, result.output
    assert os.readlink(folder / CURRENT) != target and (folder / target).is_dir()

    both = runner.invoke(cli, ["train", *data, "--publish", str(folder), "--out", str(tmp_path)])
    assert both.exit_code == 2 and "without --out" in both.output
    (tmp_path / "taken" / CURRENT).mkdir(parents=True)
    taken = runner.invoke(cli, ["train", *data, "--publish", str(tmp_path / "taken")])
    assert taken.exit_code == 2 and "not a link latentrec made" in taken.output
    assert len(taken.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- hot swap


def test_the_service_swaps_to_a_newly_published_model(models, tmp_path):
    first, second, train = models
    folder = tmp_path / "models"
    one = publish(first, folder, train)
    app = create_app(folder / CURRENT, check_every=0)
    holder: ModelHolder = app.state.holder
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["version"] == one.name and health["saved_at"].endswith("Z")
        before = _scores(client)
        assert holder.check() is None  # nothing changed: no load
        two = publish(second, folder, train)
        assert client.get("/health").json()["version"] == one.name  # not before a check
        loading = holder.check()
        assert loading is not None
        loading.join()
        assert client.get("/health").json()["version"] == two.name
        assert _scores(client) != before


def test_a_request_keeps_the_model_it_started_with(models, tmp_path):
    first, second, train = models
    folder = tmp_path / "models"
    one = publish(first, folder, train)
    holder = ModelHolder(folder / CURRENT, check_every=0)
    taken = holder.current()
    publish(second, folder, train)
    holder.check().join()
    assert taken.version == one.name and taken.recommender.model is not None
    assert holder.current().version != one.name
    assert taken.recommender.recommend(100, k=3)  # the old model still answers


def test_checks_come_at_most_once_per_interval(models, tmp_path):
    first, second, train = models
    folder = tmp_path / "models"
    one = publish(first, folder, train)
    now = [0.0]
    holder = ModelHolder(folder / CURRENT, check_every=1.0, clock=lambda: now[0])
    two = publish(second, folder, train)
    now[0] = 0.5
    assert holder.current().version == one.name  # no check yet
    now[0] = 1.0
    holder.current()  # this check starts the load in the background
    deadline = time.monotonic() + 30
    while holder.current().version != two.name and time.monotonic() < deadline:
        time.sleep(0.01)
    assert holder.current().version == two.name


@pytest.mark.parametrize("damage", ["empty", "torn", "dangling"])
def test_a_broken_model_leaves_the_old_one_serving(models, tmp_path, caplog, damage):
    first, _, train = models
    folder = tmp_path / "models"
    one = publish(first, folder, train)
    app = create_app(folder / CURRENT, check_every=0)
    holder: ModelHolder = app.state.holder
    broken = folder / "v-20990101-000000-badbad"
    if damage != "dangling":
        broken.mkdir()
    if damage == "torn":
        for name in ("config.json", "ids.json", "model.safetensors", "train.safetensors"):
            (broken / name).write_bytes((one / name).read_bytes()[:40])
    with TestClient(app) as client:
        health = client.get("/health").json()
        before = _scores(client)
        (folder / "next").symlink_to(broken.name)
        os.replace(folder / "next", folder / CURRENT)
        with caplog.at_level(logging.ERROR, logger="latentrec.serving"):
            holder.check().join()
        assert client.get("/health").json() == health
        assert _scores(client) == before
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and one.name in errors[0].getMessage()
        assert broken.name in errors[0].getMessage()
        assert holder.check() is None  # the same broken model is not tried again and again


def test_a_rating_model_pair_reloads_when_either_changes(tmp_path, caplog):
    train, _ = checkerboard()
    lists, _ = fit(train, "ease", progress=False)
    stars, _ = fit(train, "dot", epochs=2, n_factors=4, seed=3, progress=False)
    restars, _ = fit(train, "dot", epochs=2, n_factors=8, seed=4, progress=False)
    ranking = publish(lists, tmp_path / "lists", train)
    publish(stars, tmp_path / "stars", train)
    holder = ModelHolder(tmp_path / "lists" / CURRENT, tmp_path / "stars" / CURRENT, 0)
    assert holder.current().version == ranking.name
    newer = publish(restars, tmp_path / "stars", train)
    with caplog.at_level(logging.INFO, logger="latentrec"):
        holder.check().join()
    served = holder.current()
    assert served.version == ranking.name and served.rating_model_version == newer.name
    assert served.recommender.rating_model is not None
    # the log names the rating model that changed (regression, review: "model X (was X)")
    assert f"with rating model {newer.name}" in caplog.text


def test_a_plain_directory_saved_again_is_swapped_too(models, tmp_path):
    from latentrec import save

    first, second, train = models
    folder = save(first, tmp_path / "model", train)
    holder = ModelHolder(folder, check_every=0)
    saved_at = holder.current().saved_at
    before = holder.current().recommender
    time.sleep(0.01)
    save(second, folder, train)
    holder.check().join()
    assert holder.current().recommender is not before
    assert holder.current().version == "model" and holder.current().saved_at >= saved_at


def test_a_directory_copied_over_file_by_file_ends_up_served_whole(models, tmp_path):
    # regression (review): the first file to land (config.json) made the only reload, of a
    # mix of old and new files or of one that failed, and the rest were never loaded
    import shutil

    from latentrec import save

    first, second, train = models
    served = save(first, tmp_path / "served", train)
    newer = save(second, tmp_path / "newer", train)
    holder = ModelHolder(served, check_every=0)
    for name in ("config.json", "ids.json", "model.safetensors", "train.safetensors"):
        shutil.copyfile(newer / name, served / name)
        loading = holder.check()
        if loading is not None:
            loading.join()
    expected = Recommender(second, train).recommend(100, k=5)
    assert holder.current().recommender.recommend(100, k=5) == expected


def test_a_ready_recommender_is_served_as_it_is(models):
    first, _, train = models
    app = create_app(Recommender(first, train))
    assert app.state.holder.check() is None
    with TestClient(app) as client:
        assert client.get("/health").json()["version"] is None


# ----------------------------------------------------------------------------- a real server


def _serve(model_dir: Path, log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`latentrec serve` in a child process, its output to `log` (a pipe nobody reads would
    fill with access lines and stall the server); returns it and its URL once /health answers."""
    port = _free_port()
    command = [sys.executable, "-m", "latentrec", "serve", str(model_dir), "--port", str(port)]
    with open(log, "wb") as output:
        process = subprocess.Popen([*command, *options], stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    process.wait(timeout=10)
    pytest.fail("the server did not start: " + log.read_text(errors="replace")[-2000:])


def _stop(process: subprocess.Popen, log: Path) -> str:
    process.terminate()
    # uvicorn hears SIGTERM only once a SIGHUP's restart of the workers is done: on a busy
    # machine a new worker takes seconds to start
    process.wait(timeout=120)
    return log.read_text(errors="replace")


@pytest.mark.slow
def test_publishing_under_load_fails_no_request(models, tmp_path):
    first, second, train = models
    folder = tmp_path / "models"
    one = publish(first, folder, train)
    log = tmp_path / "serve.log"
    process, url = _serve(folder / CURRENT, log, "--workers", "2")
    statuses: list[int] = []
    versions: set[str] = set()
    done = threading.Event()

    def load_it() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not done.is_set():
                try:
                    response = client.get("/users/100/recommendations", params={"k": 5})
                    statuses.append(response.status_code)
                    health = client.get("/health")
                    statuses.append(health.status_code)
                    versions.add(health.json()["version"])
                except httpx.HTTPError as err:
                    statuses.append(-1)
                    versions.add(repr(err))

    clients = [threading.Thread(target=load_it) for _ in range(4)]
    try:
        for client in clients:
            client.start()
        time.sleep(0.5)
        published = [publish(second if n % 2 == 0 else first, folder, train) for n in range(3)]
        time.sleep(3)  # each worker checks at most once a second, then loads
    finally:
        done.set()
        for client in clients:
            client.join()
        output = _stop(process, log)
    assert statuses and set(statuses) == {200}, [v for v in versions if not v.startswith("v-")]
    assert one.name in versions and published[-1].name in versions, versions
    swaps = [line for line in output.splitlines() if "now serving model" in line]
    assert len(swaps) >= 2 and published[-1].name in swaps[-1]  # each worker swapped


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_the_model(models, tmp_path, workers):
    """With several workers, uvicorn replaces them one by one (regression, review: a new
    worker slower to start than uvicorn's default 5 s left the old ones serving)."""
    first, second, train = models
    folder = tmp_path / "models"
    one = publish(first, folder, train)
    log = tmp_path / "serve.log"
    # only SIGHUP reloads
    process, url = _serve(folder / CURRENT, log, "--check-every", "0", "--workers", workers)
    try:
        two = publish(second, folder, train)
        time.sleep(1.5)
        assert httpx.get(f"{url}/health").json()["version"] == one.name
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        version = one.name
        while version != two.name and time.monotonic() < deadline:
            time.sleep(0.1)
            try:
                version = httpx.get(f"{url}/health").json()["version"]
            except httpx.RemoteProtocolError:
                # uvicorn retiring a worker can close a connection it accepted but had not
                # read yet (a request being sent as the worker stops): ask again
                continue
        assert version == two.name
        assert process.poll() is None  # SIGHUP did not end the server
    finally:
        _stop(process, log)


@pytest.mark.slow
def test_sighup_while_the_service_starts_does_not_end_it(models, tmp_path):
    # regression (review): SIGHUP before the app listened for it ended `serve` (exit 129),
    # as a publish-then-reload job does when it meets a restart
    first, _, train = models
    folder = tmp_path / "models"
    publish(first, folder, train)
    log = tmp_path / "serve.log"
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "latentrec",
        "serve",
        str(folder / CURRENT),
        "--port",
        str(port),
    ]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "serving " not in log.read_text(errors="replace") and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text(errors="replace")
            time.sleep(0.02)
        process.send_signal(signal.SIGHUP)  # the model loaded, uvicorn not yet serving
        status = None
        while status != 200 and process.poll() is None and time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code
            except httpx.HTTPError:
                time.sleep(0.1)
        assert status == 200 and process.poll() is None, log.read_text(errors="replace")
    finally:
        _stop(process, log)

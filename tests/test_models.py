"""Model architectures, configs and the fallback for ids the model has never seen."""

from __future__ import annotations

import mmap
from pathlib import Path

import pytest
import torch

from latentrec import ConfigError, DotConfig, DotProductBias, EmbeddingNN, NNConfig, build_model
from latentrec.models import (
    HUGE_PAGE,
    MODELS,
    config_from_json,
    embedding_size,
    zeros_in_huge_pages,
)


def test_embedding_size_rule_of_thumb():
    assert embedding_size(610) == round(1.6 * 610**0.56)
    assert embedding_size(10**9) == 600


def test_nn_uses_rule_of_thumb_unless_sizes_are_given():
    net = EmbeddingNN(610, 9000)
    assert net.user_embedding.weight.shape == (610, embedding_size(610))
    assert net.item_embedding.weight.shape == (9000, embedding_size(9000))
    sized = EmbeddingNN(610, 9000, user_size=8, item_size=12, layers=[7])
    assert sized.user_embedding.weight.shape[1] == 8
    linears = [m for m in sized.layers if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [7, 1]
    assert linears[0].in_features == 20


def _push_logits(net, value: float) -> None:
    """Make every logit `value`: biases for the dot model, the last layer for the nn."""
    with torch.no_grad():
        if isinstance(net, DotProductBias):
            net.user_factors.weight.zero_()
            net.user_bias.weight.fill_(value)
            net.item_bias.weight.zero_()
        else:
            net.layers[-1].weight.zero_()
            net.layers[-1].bias.fill_(value)


@pytest.mark.parametrize("y_range", [(-2.0, 2.0), (1.0, 10.0)])
@pytest.mark.parametrize(
    "make",
    [
        lambda r: DotProductBias(5, 7, n_factors=4, y_range=r),
        lambda r: EmbeddingNN(5, 7, y_range=r),
    ],
)
def test_predictions_span_the_configured_y_range(make, y_range):
    net = make(y_range).eval()
    users, items = torch.tensor([0, 1, 4]), torch.tensor([0, 6, 3])
    for logit, end in ((30.0, y_range[1]), (-30.0, y_range[0]), (0.0, sum(y_range) / 2)):
        _push_logits(net, logit)
        with torch.no_grad():
            out = net(users, items)
        assert out.shape == (3,)
        assert torch.allclose(out, torch.full((3,), end), atol=1e-5), (logit, out)


def test_dot_model_is_sigmoid_of_dot_plus_biases():
    net = DotProductBias(2, 2, n_factors=3, y_range=(1.0, 5.0))
    with torch.no_grad():
        net.user_factors.weight.copy_(torch.tensor([[1.0, 0, 2], [0, 0, 0]]))
        net.item_factors.weight.copy_(torch.tensor([[0.5, 1, 1], [0, 0, 0]]))
        net.user_bias.weight.fill_(0.25)
        net.item_bias.weight.fill_(-0.5)
        out = net(torch.tensor([0]), torch.tensor([0]))
    expected = 1.0 + 4.0 * torch.sigmoid(torch.tensor(0.5 + 2.0 + 0.25 - 0.5))
    assert torch.allclose(out, expected.reshape(1))


def test_unknown_ids_fall_back_to_average_rows_and_global_mean():
    net = DotProductBias(3, 3, n_factors=2, global_mean=3.3)
    with torch.no_grad():
        net.item_bias.weight.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
        both = net(torch.tensor([-1]), torch.tensor([-1]))
        user_only = net(torch.tensor([-1]), torch.tensor([2]))
        # an average user: the mean of each user table, never an index error
        mean_factors = net.user_factors.weight.mean(0)
        logit = mean_factors @ net.item_factors.weight[2] + net.user_bias.weight.mean() + 3.0
        expected = 5.5 * torch.sigmoid(logit)
    assert both.item() == pytest.approx(3.3)
    assert user_only.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(
    ("config", "field", "value", "needle"),
    [
        (DotConfig, "n_factors", 0, "n_factors"),
        (NNConfig, "layers", (10, -1), "layers"),
        (NNConfig, "dropout", 1.0, "dropout"),
        (DotConfig, "y_range", (5, 1), "y_range"),
        (NNConfig, "rating_range", (5, 1), "rating_range"),
    ],
)
def test_config_validation_names_the_field(config, field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        config(**{field: value})


def test_an_unknown_model_kind_names_the_registered_ones():
    names = ", ".join(MODELS)
    with pytest.raises(ConfigError, match=f"model must be one of {names}, got 'svd'"):
        config_from_json({"kind": "svd"})


def test_config_json_round_trip_rebuilds_the_same_architecture():
    config = EmbeddingNN(10, 20, layers=[16, 8], dropout=0.1).config
    again = config_from_json(config.to_json())
    assert again == config
    assert isinstance(build_model(again), EmbeddingNN)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_large_tables_get_zeroed_huge_page_memory(dtype):
    shape = (3, 2 * HUGE_PAGE // dtype.itemsize // 3 + 5)  # a little over 2 MiB a row
    table = zeros_in_huge_pages(shape, dtype)
    assert table.shape == shape and table.dtype == dtype and table.is_contiguous()
    assert not table.any()
    if hasattr(mmap, "MADV_HUGEPAGE"):  # Linux: the table starts on a huge page
        assert table.data_ptr() % HUGE_PAGE == 0
    table[-1, -1] = 1  # writable, to its last element
    assert table.sum() == 1


def test_small_tables_are_ordinary_tensors():
    table = zeros_in_huge_pages((4, 5))
    assert table.dtype == torch.get_default_dtype() and not table.any()


@pytest.mark.parametrize("n_users", [50, 20_000])  # below and above a huge page of factors
def test_a_seed_gives_the_tables_nn_embedding_would(n_users):
    torch.manual_seed(7)
    net = DotProductBias(n_users, 30, n_factors=50)
    torch.manual_seed(7)  # the same draws in the same order: four tables, then the factors'
    user_factors, item_factors = torch.nn.Embedding(n_users, 50), torch.nn.Embedding(30, 50)
    torch.nn.Embedding(n_users, 1), torch.nn.Embedding(30, 1)
    for table in (user_factors, item_factors):
        torch.nn.init.trunc_normal_(table.weight, std=0.01)
    assert torch.equal(net.user_factors.weight, user_factors.weight)
    assert torch.equal(net.item_factors.weight, item_factors.weight)


@pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage/enabled").exists(),
    reason="the kernel has no transparent huge pages",
)
def test_large_tables_ask_the_kernel_for_huge_pages():
    table = zeros_in_huge_pages((2 * HUGE_PAGE // 4,), torch.float32)
    address = table.data_ptr()
    flags = None
    region = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and ":" not in first:  # a mapping's header: start-end perms ...
            start, end = (int(x, 16) for x in first.split("-"))
            region = start <= address < end
        elif region and first == "VmFlags:":
            flags = line.split()[1:]
    assert flags is not None and "hg" in flags  # MADV_HUGEPAGE is set on its mapping


def test_tables_follow_a_default_device_context():
    with torch.device("meta"):
        net = DotProductBias(20_000, 30, n_factors=50)  # 4 MB of user factors
    assert {table.weight.device.type for table in net.tables().values()} == {"meta"}


def test_nn_scores_every_user_in_bounded_memory():
    # regression (issue 14): score_matrix repeated rows into a (users x items x 332) tensor:
    # 610 users x 9,742 items of the bundled data was 7.9 GB
    from latentrec import Recommender, load_ratings
    from latentrec.memory import _reset_peak_rss, _rss
    from latentrec.models import SCORE_CHUNK_BYTES, build_model
    from latentrec.training import make_configs

    ratings = load_ratings("movielens-small")
    torch.manual_seed(0)
    net = build_model(make_configs(ratings, "nn", {})[0]).eval()
    recommender = Recommender(net, ratings)
    users = ratings.users.ids.tolist()
    if not _reset_peak_rss():
        pytest.skip("this system cannot reset the peak resident set size")
    before = _rss()[0]
    lists = recommender.recommend_batch(users, k=10)
    grown = _rss()[1] - before
    result = len(users) * ratings.n_items * 4  # the (users x items) scores themselves
    assert grown < 3 * result + 4 * SCORE_CHUNK_BYTES, grown
    assert len(lists) == len(users)
    for user, listed in zip(users[:3], lists[:3], strict=True):
        alone = recommender.recommend(user, k=10)
        assert [r.item_id for r in listed] == [r.item_id for r in alone]
        assert [r.score for r in listed] == pytest.approx([r.score for r in alone], rel=1e-5)


@pytest.mark.parametrize("emb_dropout", [0.0, 0.5])
def test_nn_predict_equals_the_model_on_each_pair(emb_dropout):
    torch.manual_seed(0)
    net = EmbeddingNN(6, 9, layers=(12, 5), emb_dropout=emb_dropout).eval()
    users, items = torch.arange(6), torch.arange(9)
    matrix = net.predict(net.user_rows(users), net.item_rows())
    pairs = net(users.repeat_interleave(9), items.repeat(6)).reshape(6, 9)
    assert torch.allclose(matrix, pairs, atol=1e-6)

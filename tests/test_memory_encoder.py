"""The long-context memory encoder: masks, no leakage, incremental == full, a learned known answer, save/load."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recsys.data import Histories
from recsys.errors import ConfigError, DataError
from recsys.models.memory_encoder import MemoryEncoder, MemoryEncoderConfig, MemoryStates, WeightAverage, _concat
from recsys.models.memory_net import MemoryNetConfig, segment_mask
from recsys.models.memory_recommender import MemoryRecommender, MemoryRecommenderConfig
from recsys.models.text_encoder import TextEncoderConfig

SMALL = MemoryNetConfig(text_dim=16, dim=16, n_heads=2, n_layers=2, segment_len=4, n_memory=2, dropout=0.0)


def random_vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def histories(lengths: list[int], n_items: int = 40, seed: int = 0, t0: int = 0) -> Histories:
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(indptr[-1])
    times = t0 + np.sort(rng.integers(0, 10**6, n))
    return Histories(
        pl.Series("user_id", np.arange(len(lengths))),
        indptr,
        rng.integers(0, n_items, n),
        times,
        rng.normal(size=n).astype(np.float32),
    )


@pytest.fixture(scope="module")
def perturbed() -> MemoryEncoder:
    """An untrained encoder with random (not zero-shot) weights, so that memory and time gaps matter."""
    encoder = MemoryEncoder(MemoryEncoderConfig(net=SMALL)).initialize(random_vectors(40))
    with torch.no_grad():
        for p in encoder.net_.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return encoder


def test_segment_mask_known_pattern():
    allowed = segment_mask(torch.tensor([[True, True, False]]), n_memory=2)[0, 0].int().tolist()
    assert allowed == [
        [1, 1, 0, 0, 0],  # memory reads memory only in the read pass
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # event 0: memory + itself
        [1, 1, 1, 1, 0],  # event 1: memory + events 0, 1
        [1, 1, 1, 1, 0],  # padded event: never a key
    ]


def test_outputs_never_see_future_events(perturbed: MemoryEncoder):
    """Changing events after t leaves every user vector up to t unchanged, across segments."""
    h = histories([11])
    batch = perturbed._padded(h, np.array([0]), None)
    changed = perturbed._padded(h, np.array([0]), None)
    changed.items[0, 7:] = (changed.items[0, 7:] + 5) % 40
    with torch.no_grad():
        a, _ = perturbed.net_(batch)
        b, _ = perturbed.net_(changed)
    assert a.shape == (1, 12, 16)
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert not torch.allclose(a[0, 7:11], b[0, 7:11])


def test_encode_shapes_norms_and_empty_users(perturbed: MemoryEncoder):
    vectors = perturbed.encode(histories([0, 1, 4, 9]))
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    assert np.allclose(vectors[0], 0)
    assert np.allclose(np.linalg.norm(vectors[1:], axis=1), 1, atol=1e-5)


def test_batched_equals_one_by_one(perturbed: MemoryEncoder):
    h = histories([3, 17, 0, 8, 25])
    whole = perturbed.encode(h)
    single = np.vstack([perturbed.encode(h, np.array([u])) for u in range(5)])
    assert np.abs(whole - single).max() < 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_update_equals_full_encoding(perturbed: MemoryEncoder, seed: int):
    old = histories([0, 1, 3, 4, 5, 8, 9, 30], seed=seed)
    new = histories([2, 0, 1, 4, 12, 3, 0, 7], seed=seed + 10, t0=10**7)
    updated = perturbed.update(perturbed.states(old), new)
    full = perturbed.states(_concat(old, new))
    assert np.abs(updated.embeddings - full.embeddings).max() <= 1e-4
    assert np.abs(updated.memory - full.memory).max() <= 1e-4
    assert (updated.committed % 4 == 0).all()
    assert (
        (updated.tail.lengths >= 1) & (updated.tail.lengths <= 4) | (updated.committed + updated.tail.lengths == 0)
    ).all()


def test_update_reads_only_the_tail_and_new_events(perturbed: MemoryEncoder):
    states = perturbed.states(histories([1000]))
    assert states.committed[0] == 996 and states.tail.lengths[0] == 4
    updated = perturbed.update(states, histories([10], seed=3, t0=10**7))
    assert updated.committed[0] == 1008 and updated.tail.lengths[0] == 2


def test_states_save_load_round_trip(perturbed: MemoryEncoder, tmp_path):
    states = perturbed.states(histories([0, 3, 9]))
    states.save(tmp_path)
    loaded = MemoryStates.load(tmp_path)
    assert np.array_equal(loaded.embeddings, states.embeddings)
    again = perturbed.update(loaded, histories([1, 1, 1], seed=5, t0=10**7))
    assert (
        np.abs(again.embeddings - perturbed.update(states, histories([1, 1, 1], seed=5, t0=10**7)).embeddings).max()
        == 0
    )


def test_encoder_arrays_round_trip(perturbed: MemoryEncoder):
    h = histories([2, 7, 13])
    rebuilt = MemoryEncoder.from_arrays(perturbed.config, perturbed.to_arrays())
    assert np.array_equal(rebuilt.encode(h), perturbed.encode(h))
    assert np.array_equal(rebuilt.item_vectors(), perturbed.item_vectors())


def topic_sequences(n_users: int = 60, per_topic: int = 10, length: int = 12, seed: int = 0) -> Histories:
    """Three topics of ``per_topic`` items; each user reads items of one topic only."""
    rng = np.random.default_rng(seed)
    topics = np.arange(n_users) % 3
    items = np.concatenate([topic * per_topic + rng.integers(0, per_topic, length) for topic in topics])
    indptr = np.arange(0, n_users * length + 1, length, dtype=np.int64)
    return Histories(
        pl.Series("user_id", np.arange(n_users)),
        indptr,
        items.astype(np.int64),
        np.arange(len(items), dtype=np.int64),
        None,
    )


def test_trained_on_one_topic_histories_it_recommends_that_topic():
    """Random text vectors carry no topic, so only training can make the topic appear."""
    h = topic_sequences()
    config = MemoryEncoderConfig(
        net=SMALL,
        epochs=30,
        patience=30,
        batch_users=20,
        n_negatives=64,
        learning_rate=3e-3,
        show_progress=False,
        seed=0,
    )
    encoder = MemoryEncoder(config).fit(h, random_vectors(30, seed=1))
    test = topic_sequences(n_users=9, seed=7)
    top = np.argsort(-(encoder.encode(test) @ encoder.item_vectors().T), axis=1)[:, :5]  # (9, 5)
    topics = np.arange(9) % 3
    share = (top // 10 == topics[:, None]).mean()
    assert share >= 0.9, f"only {share:.0%} of top-5 items are of the user's topic"


def test_memory_recommender_in_the_harness(topic_items: pl.DataFrame, topic_interactions: pl.DataFrame, tmp_path):
    config = MemoryRecommenderConfig(
        text=TextEncoderConfig(cache_dir=str(tmp_path), show_progress=False),
        encoder=MemoryEncoderConfig(
            net=MemoryNetConfig(dim=32, n_heads=2, segment_len=4, n_memory=2), epochs=2, show_progress=False
        ),
    )
    model = MemoryRecommender(config).fit(topic_interactions, topic_items)
    recs = model.recommend([0, 3, 6], k=3)
    assert recs.height == 9 and recs.join(topic_interactions, on=["user_id", "item_id"], how="semi").height == 0
    limited = model.with_max_events(1).recommend([0, 3, 6], k=3)
    assert limited.height == 9


def test_last_events():
    h = histories([5, 1, 0])
    cut = h.last(2)
    assert cut.lengths.tolist() == [2, 1, 0]
    assert cut.item_idx.tolist() == [*h.item_idx[3:5], h.item_idx[5]]


def test_explicit_validation_events_and_the_refit_pass():
    """The default holds out each user's last event; passing that split explicitly gives the same model, and
    the refit pass (on training plus validation events) changes the weights only when it is on."""
    h = histories([6, 9, 5, 12], n_items=40, seed=3)
    config = MemoryEncoderConfig(net=SMALL, epochs=2, n_negatives=16, show_progress=False, seed=0)
    held = (h.lengths >= 2).astype(np.int64)
    train = h.select(np.arange(h.n_users), h.indptr[:-1], h.lengths - held)
    valid = h.select(np.arange(h.n_users), h.indptr[1:] - held, held)
    implicit = MemoryEncoder(config).fit(h, random_vectors(40))
    explicit = MemoryEncoder(config).fit(train, random_vectors(40), valid)
    assert np.allclose(implicit.encode(h), explicit.encode(h), atol=1e-6)
    no_refit = MemoryEncoder(MemoryEncoderConfig(**{**config.__dict__, "refit_epochs": 0})).fit(h, random_vectors(40))
    assert not np.allclose(no_refit.encode(h), implicit.encode(h), atol=1e-4)
    with pytest.raises(DataError, match="align"):
        MemoryEncoder(config).fit(train, random_vectors(40), valid.select(np.arange(2)))


def test_items_first_seen_in_validation_get_a_residual_only_in_the_refit():
    """Training never pushes them down as mere negatives: their residual is masked until the refit pass."""
    train = histories([5, 5], n_items=30, seed=1)
    train = Histories(train.user_ids, train.indptr, train.item_idx % 20, train.timestamps, train.weights)
    valid = Histories(train.user_ids, np.array([0, 1, 2]), np.array([25, 26]), np.array([10**7, 10**7]))
    config = MemoryEncoderConfig(net=SMALL, epochs=1, n_negatives=64, show_progress=False)
    before = MemoryEncoder(MemoryEncoderConfig(**{**config.__dict__, "refit_epochs": 0}))
    before.fit(train, random_vectors(30), valid)
    assert not before.net_.items.known[25] and float(before.net_.items.residual.weight[25].detach().abs().sum()) == 0.0
    after = MemoryEncoder(config).fit(train, random_vectors(30), valid)
    assert after.net_.items.known[25] and float(after.net_.items.residual.weight[25].detach().abs().sum()) > 0.0


def test_weight_average_known_values_and_applied_restores_the_weights():
    """Bias-corrected: after one step the average is that step's weights; buffers are the module's own."""
    net = torch.nn.BatchNorm1d(1)  # weight 1.0 (a parameter), running_mean 0.0 (a buffer)
    average = WeightAverage(net, decay=0.9)
    with torch.no_grad():
        net.weight.fill_(3.0)
    average.update(net)  # 0.1 * 3 / (1 - 0.9) = 3
    assert average.shadow["weight"].item() == pytest.approx(3.0)
    with torch.no_grad():
        net.weight.fill_(0.0)
        net.running_mean.fill_(5.0)
    average.update(net)  # (0.9 * 0.1 * 3 + 0.1 * 0) / (1 - 0.81) = 0.27 / 0.19
    assert average.shadow["weight"].item() == pytest.approx(0.27 / 0.19)
    state = average.state_dict(net)
    assert state["weight"].item() == pytest.approx(0.27 / 0.19) and state["running_mean"].item() == 5.0
    with average.applied(net):
        assert net.weight.item() == pytest.approx(0.27 / 0.19)
    assert net.weight.item() == 0.0


def test_ema_training_keeps_the_averaged_weights(monkeypatch):
    """With ``ema_decay`` the encoder keeps the average, not the last step's weights. Four users make one batch,
    so each epoch is one step; with a validation score that rises every epoch, two epochs keep
    ``(0.5 * w1 + w2) / 1.5`` at decay 0.5, where ``w1``, ``w2`` are the plain weights after each epoch."""
    scores = iter(range(1000))
    monkeypatch.setattr(MemoryEncoder, "_validate", lambda self, train, targets: float(next(scores)))
    h = histories([6, 9, 5, 12], n_items=40, seed=3)
    base = MemoryEncoderConfig(net=SMALL, epochs=1, n_negatives=16, refit_epochs=0, show_progress=False, seed=0)
    w1 = MemoryEncoder(base).fit(h, random_vectors(40)).net_.state_dict()
    two = MemoryEncoderConfig(**{**base.__dict__, "epochs": 2})
    w2 = MemoryEncoder(two).fit(h, random_vectors(40)).net_.state_dict()
    averaged = MemoryEncoder(MemoryEncoderConfig(**{**two.__dict__, "ema_decay": 0.5})).fit(h, random_vectors(40))
    names = dict(averaged.net_.named_parameters())
    moved = 0
    for key, value in averaged.net_.state_dict().items():
        if key in names:
            assert torch.allclose(value, (0.5 * w1[key] + w2[key]) / 1.5, atol=1e-6), key
            moved += int(not torch.allclose(w2[key], w1[key]))
        else:
            assert torch.equal(value, w2[key]), key  # buffers: the module's own
    assert moved > 0
    with pytest.raises(ConfigError, match="ema_decay"):
        MemoryEncoderConfig(ema_decay=1.0)


@pytest.mark.parametrize(("field", "value"), [("refit_epochs", -1), ("refit_lr_scale", 0.0), ("refit_lr_scale", 2.0)])
def test_refit_settings_are_checked(field: str, value: float):
    with pytest.raises(ConfigError, match=field):
        MemoryEncoderConfig(**{field: value})


def test_max_epoch_users_samples_a_fresh_subset_each_epoch():
    """Guards the epoch cap used at 10^6 users: at most max_epoch_users users per epoch, a new sample each."""
    h = histories([3] * 50 + [1] * 5)
    encoder = MemoryEncoder(MemoryEncoderConfig(max_epoch_users=10, batch_users=4))
    rng = np.random.default_rng(0)
    first = np.concatenate(list(encoder._batches(h, rng)))
    second = np.concatenate(list(encoder._batches(h, rng)))
    assert len(first) == len(set(first.tolist())) == 10 and (h.lengths[first] >= 2).all()
    assert set(first.tolist()) != set(second.tolist())
    with pytest.raises(ConfigError, match="max_epoch_users"):
        MemoryEncoderConfig(max_epoch_users=0)


def test_padded_batch_whose_last_user_is_shorter_by_a_segment():
    """Regression: padding positions of the last user of ``h`` pointed past the event arrays (IndexError) when
    another user of the batch had more segments (seen with max_epoch_users samples at 10^4 users)."""
    h = histories([40, 3])
    encoder = MemoryEncoder(MemoryEncoderConfig())
    batch = encoder._padded(h, np.array([0, 1]), None)
    assert batch.valid.shape == (2, 64) and batch.valid.sum().item() == 43

"""A synthetic catalogue with text and users with long, drifting histories, built at 10^6 x 10^6 scale.

:func:`synthetic_dataset` is vectorised end to end (numpy and polars; no Python loop over users, items or
events), so a million items and a million users (about 3 x 10^7 events) take a minute or so and a few GiB.

The model behind it:

- **Topics.** ``n_topics`` topics, each with a name (its ``category``) and a vocabulary of ``words_per_topic``
  readable pseudo-words made of consonant-vowel syllables; a shared vocabulary of common words is mixed in.
  Topics differ in size (a Dirichlet share of the catalogue) and in how often users start in them.
- **Items.** Each item belongs to one topic. Its text is title-like: three capitalised topic words, the topic
  name, and five to seven more words (about 70% from the topic's vocabulary), 10 to 12 words in all. Within a
  topic, items have a Zipf-like popularity (``popularity_skew``): the item at popularity rank ``r`` (from 1) is
  drawn with weight about ``r ** -popularity_skew``.
- **Users.** History lengths are log-normal with mean about ``mean_history`` (``history_sigma`` sets the
  tail), at least ``min_history`` and at most ``max_history``: most users have a few dozen events, some
  thousands, and at 10^6 users a few reach ``max_history``.
- **Drift.** A user's interest is a random walk over the topics, placed on a ring: after each event it moves
  with probability ``drift`` by 1 to 3 topics either way. ``explore`` of the events instead come from a random
  topic (the walk stays where it is). So users' first and last topics differ for nearly every long history.
- **Time.** Each user starts at a random moment of one year; the gaps between events are log-normal (median
  about an hour), at least one second, so every user's timestamps strictly increase.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from recsys.data import Dataset
from recsys.errors import ConfigError
from recsys.schema import ITEM_ID, TEXT, TIMESTAMP, USER_ID

__all__ = ["SyntheticConfig", "synthetic_dataset"]

logger = logging.getLogger("recsys.datasets")

_CONSONANTS = np.array(list("bdfgklmnprstvz"))
_VOWELS = np.array(list("aeiou"))
_SYLLABLES = np.char.add(np.repeat(_CONSONANTS, len(_VOWELS)), np.tile(_VOWELS, len(_CONSONANTS)))  # 70
_N_COMMON = 200  # shared words (the "and", "of" of the pseudo-language)
_START = 1_700_000_000  # 2023-11-14, unix seconds
_YEAR = 365 * 86_400


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of :func:`synthetic_dataset` beyond the sizes (see the module docstring for the model).

    Parameters
    ----------
    max_history: the longest history (events); lengths above it are cut to it.
    mean_history: mean of the log-normal history length before the cut (the cut lowers it slightly).
    history_sigma: log-normal shape; 1.6 gives about 5 users at 10,000 events per 10^6 users.
    min_history: the shortest history.
    n_topics: topics (item categories); None: about ``n_items / 1000``, between 20 and 1,000.
    words_per_topic: pseudo-words in each topic's vocabulary.
    popularity_skew: Zipf exponent of item popularity within a topic (0: uniform).
    drift: probability that the interest walk moves after an event.
    explore: share of events drawn from a uniformly random topic instead of the current one.
    """

    max_history: int = 10_000
    mean_history: float = 30.0
    history_sigma: float = 1.6
    min_history: int = 2
    n_topics: int | None = None
    words_per_topic: int = 60
    popularity_skew: float = 0.8
    drift: float = 0.05
    explore: float = 0.1

    def __post_init__(self) -> None:
        if self.min_history < 1 or self.max_history < self.min_history:
            raise ConfigError(
                f"SyntheticConfig needs 1 <= min_history <= max_history; got min_history={self.min_history}, "
                f"max_history={self.max_history}."
            )
        if not self.mean_history >= self.min_history:
            raise ConfigError(
                f"SyntheticConfig.mean_history={self.mean_history} must be >= min_history={self.min_history}."
            )
        if not self.history_sigma > 0:
            raise ConfigError(f"SyntheticConfig.history_sigma={self.history_sigma} must be > 0.")
        if self.n_topics is not None and self.n_topics < 1:
            raise ConfigError(f"SyntheticConfig.n_topics={self.n_topics} must be >= 1 or None.")
        if self.words_per_topic < 10:
            raise ConfigError(f"SyntheticConfig.words_per_topic={self.words_per_topic} must be >= 10.")
        for name in ("drift", "explore"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"SyntheticConfig.{name}={getattr(self, name)} must be in [0, 1].")
        if self.popularity_skew < 0:
            raise ConfigError(f"SyntheticConfig.popularity_skew={self.popularity_skew} must be >= 0.")

    def topics_for(self, n_items: int) -> int:
        """The number of topics for a catalogue of ``n_items`` items."""
        return self.n_topics if self.n_topics is not None else int(np.clip(n_items // 1000, 20, 1000))


def _pseudo_words(rng: np.random.Generator, n: int) -> pl.Series:
    """``n`` pronounceable lower-case words of 2 or 3 consonant-vowel syllables (String Series)."""
    syllables = pl.Series(_SYLLABLES.tolist())
    picks = rng.integers(0, len(_SYLLABLES), (n, 3))
    frame = pl.DataFrame({f"s{j}": syllables.gather(picks[:, j]) for j in range(3)} | {"long": rng.random(n) < 0.5})
    third = pl.when(pl.col("long")).then(pl.col("s2")).otherwise(pl.lit(""))
    return frame.select(pl.concat_str(pl.col("s0"), pl.col("s1"), third)).to_series()


def _item_frame(rng: np.random.Generator, topic: np.ndarray, n_topics: int, words_per_topic: int) -> pl.DataFrame:
    """``item_id (Int64), text, category``: title-like texts of 10-12 words for items of the given topics."""
    n_items = len(topic)
    names = _pseudo_words(rng, n_topics).str.to_titlecase()
    vocab = _pseudo_words(rng, n_topics * words_per_topic + _N_COMMON)
    own = topic[:, None].astype(np.int64) * words_per_topic + rng.integers(0, words_per_topic, (n_items, 10))
    common = n_topics * words_per_topic + rng.integers(0, _N_COMMON, (n_items, 10))
    words = np.where(rng.random((n_items, 10)) < 0.7, own, common)  # (n_items, 10) vocabulary rows
    words[:, :3] = own[:, :3]  # the title: three topic words
    n_body = rng.integers(5, 8, n_items)  # body words 5..7
    columns = {f"w{j}": vocab.gather(words[:, j]) for j in range(10)}
    frame = pl.DataFrame({"category": names.gather(topic), "n_body": n_body, **columns})
    title = pl.concat_str([pl.col(f"w{j}") for j in range(3)], separator=" ").str.to_titlecase()
    kept = [pl.when(pl.col("n_body") > j - 3).then(pl.col(f"w{j}")) for j in range(3, 10)]  # null: left out
    head = pl.concat_str([title, pl.col("category")], separator=", a ")
    text = pl.concat_str([head, pl.concat_str(kept, separator=" ", ignore_nulls=True)], separator=": ")
    ids = pl.Series(ITEM_ID, np.arange(n_items, dtype=np.int64))
    return frame.select(ids, text.alias(TEXT), "category")


def _history_lengths(rng: np.random.Generator, n_users: int, config: SyntheticConfig) -> np.ndarray:
    """int64 ``(n_users,)``: log-normal lengths with mean about ``mean_history``, clipped to the bounds."""
    mu = np.log(config.mean_history) - config.history_sigma**2 / 2
    raw = rng.lognormal(mu, config.history_sigma, n_users)
    return np.clip(np.rint(raw), config.min_history, config.max_history).astype(np.int64)


def _within_user(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Running sums of ``values`` restarted at each user's first event (int64, same length)."""
    total = np.cumsum(values, dtype=np.int64)
    before = total[starts] - values[starts]  # the sum before each user's first event
    return total - np.repeat(before, lengths)


def _topic_walk(
    rng: np.random.Generator, lengths: np.ndarray, n_topics: int, start_weights: np.ndarray, config: SyntheticConfig
) -> np.ndarray:
    """int32 ``(n_events,)``: each event's topic, a per-user random walk on a ring of topics plus exploration."""
    n_events = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    first = rng.choice(n_topics, size=len(lengths), p=start_weights)
    steps = rng.integers(1, 4, n_events, dtype=np.int8) * rng.choice(np.array([-1, 1], dtype=np.int8), n_events)
    steps[rng.random(n_events, dtype=np.float32) >= config.drift] = 0
    steps[starts] = 0  # the walk starts at the user's first topic
    topic = (np.repeat(first, lengths) + _within_user(steps, starts, lengths)) % n_topics
    explore = rng.random(n_events, dtype=np.float32) < config.explore
    topic[explore] = rng.integers(0, n_topics, int(explore.sum()))
    return topic.astype(np.int32)


def _pick_items(rng: np.random.Generator, topic: np.ndarray, item_topic: np.ndarray, skew: float) -> np.ndarray:
    """int64 ``(n_events,)``: an item of each event's topic, Zipf-like within the topic (rank ``r`` ~ r^-skew)."""
    order = np.argsort(item_topic, kind="stable")  # items grouped by topic; the rank within a topic is random
    sizes = np.bincount(item_topic, minlength=int(topic.max()) + 1)
    offsets = np.cumsum(sizes) - sizes
    size = sizes[topic].astype(np.float64)
    u = rng.random(len(topic))
    if abs(skew - 1.0) < 1e-9:  # inverse CDF of the continuous power law on [1, size + 1)
        rank = np.power(size + 1, u)
    else:
        rank = np.power(1 + u * (np.power(size + 1, 1 - skew) - 1), 1 / (1 - skew))
    within = np.minimum(rank.astype(np.int64) - 1, size.astype(np.int64) - 1)
    return order[offsets[topic] + within]


def _timestamps(rng: np.random.Generator, lengths: np.ndarray) -> np.ndarray:
    """int64 ``(n_events,)``: a random start in one year per user, then log-normal gaps of at least 1 s."""
    starts = np.cumsum(lengths) - lengths
    gaps = np.maximum(rng.lognormal(np.log(3600), 1.5, int(lengths.sum())), 1).astype(np.int64)
    gaps[starts] = 0
    first = _START + rng.integers(0, _YEAR, len(lengths))
    return np.repeat(first, lengths) + _within_user(gaps, starts, lengths)


def synthetic_dataset(
    n_items: int, n_users: int, *, max_history: int = 10_000, seed: int = 0, config: SyntheticConfig | None = None
) -> Dataset:
    """A validated synthetic :class:`~recsys.data.Dataset`: items with topic texts, users with drifting interests.

    Parameters
    ----------
    n_items, n_users:
        Catalogue size and number of users (each user has at least ``config.min_history`` events).
    max_history:
        The longest history; overrides ``config.max_history`` (default 10,000).
    seed:
        Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give the same dataset.
    config:
        The generator's other settings (:class:`SyntheticConfig`; see the module docstring).

    Returns
    -------
    Dataset
        Interactions ``user_id (Int64), item_id (Int64), timestamp (Int64, unix seconds)``, sorted by user and
        time; items ``item_id (Int64), text, category`` (the topic name; the pipeline's category features use
        it). Named ``"synthetic-<items>x<users>-s<seed>"``.

    Raises
    ------
    ConfigError
        ``n_items`` or ``n_users`` below 1, or a bad setting.
    """
    if n_items < 1 or n_users < 1:
        raise ConfigError(f"synthetic_dataset needs n_items >= 1 and n_users >= 1; got {n_items}, {n_users}.")
    base = config or SyntheticConfig()
    config = SyntheticConfig(**{**base.__dict__, "max_history": max_history})
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_topics = min(config.topics_for(n_items), n_items)
    item_topic = rng.choice(n_topics, size=n_items, p=rng.dirichlet(np.full(n_topics, 2.0)))
    item_topic[:n_topics] = np.arange(n_topics)  # every topic has an item
    items = _item_frame(rng, item_topic, n_topics, config.words_per_topic)
    lengths = _history_lengths(rng, n_users, config)
    topic = _topic_walk(rng, lengths, n_topics, rng.dirichlet(np.full(n_topics, 1.0)), config)
    events = pl.DataFrame(
        {
            USER_ID: np.repeat(np.arange(n_users, dtype=np.int64), lengths),
            ITEM_ID: _pick_items(rng, topic, item_topic, config.popularity_skew),
            TIMESTAMP: _timestamps(rng, lengths),
        }
    )
    del topic
    logger.info(
        "synthetic: %d items, %d users, %d events generated in %.1f s",
        n_items,
        n_users,
        events.height,
        time.perf_counter() - started,
    )
    return Dataset.from_frames(events, items, name=f"synthetic-{n_items}x{n_users}-s{seed}")

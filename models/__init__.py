"""Learned and reference models (installed as ``recsys.models``).

- :mod:`recsys.models.text_encoder`: item texts -> embeddings, cached on disk.
- :mod:`recsys.models.zero_shot`: recency-weighted mean user vector.
- :mod:`recsys.models.ranker`: LightGBM LambdaRank.
- :mod:`recsys.models.baselines`: popularity, transitions and zero-shot text recommenders.

Import from the submodules; this package imports nothing heavy by itself.
"""

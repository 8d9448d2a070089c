"""Runs inside RecBole's own virtual environment (``benchmarks/.venv-recbole``); started by ``recbole_peer.py``.

It never imports ``recsys``: everything comes in through files. ``job.json`` names a RecBole benchmark dataset
(``NAME.train.inter``, ``NAME.valid.inter``, ``NAME.test.inter`` with ``user_id, item_id_list, item_id``, and
``NAME.item`` with the full catalogue) and ``NAME.history.tsv`` (per test user, every train+valid item: the mask).

It trains the model with early stopping on the valid rows (``mode="train"``) or leaves it untrained
(``mode="timing"``), then for every row of the test file writes the top ``k`` item tokens by RecBole's
``full_sort_topk`` as RecBole does it (history not masked) and with the user's history items set to ``-inf``:

- ``users.npy``: int64, shape ``(n_users,)``, user tokens;
- ``topk_unmasked.npy``, ``topk_masked.npy``: int64, shape ``(n_users, k)``, item tokens, best first;
- ``result.json``: seconds, epochs, users/s, versions and the RecBole config used.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 python _recbole_worker.py job.json OUT_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import recbole
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_logger, init_seed
from recbole.utils.case_study import full_sort_scores, full_sort_topk


def recbole_config(job: dict[str, Any]) -> dict[str, Any]:
    """The RecBole settings of a job: benchmark files, CPU, full-ranking NDCG@10 on valid for early stopping."""
    return {
        "data_path": job["data_path"],
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"], "item": ["item_id"]},
        "MAX_ITEM_LIST_LENGTH": job["max_seq_len"],
        "seed": job["seed"],
        "reproducibility": True,
        "use_gpu": False,
        "gpu_id": "",
        "epochs": job["epochs"],
        "stopping_step": job["stopping_step"],
        "train_batch_size": job["train_batch_size"],
        "eval_batch_size": 4096,
        "train_neg_sample_args": None,
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["NDCG", "Recall"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "show_progress": False,
        "checkpoint_dir": str(Path(job["out_dir"]) / "checkpoints"),
        "state": "INFO",
    }


def read_history(path: Path, dataset: Any) -> dict[int, np.ndarray]:
    """RecBole user id -> RecBole item ids of the user's train+valid events (``NAME.history.tsv``)."""
    history: dict[int, np.ndarray] = {}
    for line in path.read_text().splitlines():
        user, items = line.split("\t")
        uid = int(dataset.token2id(dataset.uid_field, user))
        history[uid] = np.asarray(dataset.token2id(dataset.iid_field, items.split(" ")), dtype=np.int64)
    return history


def masked_topk(uids: np.ndarray, model: Any, test_data: Any, k: int, history: dict[int, np.ndarray]) -> torch.Tensor:
    """``full_sort_scores`` with the users' history items set to ``-inf``, then the top ``k`` item ids."""
    scores = full_sort_scores(uids, model, test_data)  # (B, n_items + 1); column 0 is padding
    rows = np.concatenate([np.full(len(history.get(int(u), ())), i) for i, u in enumerate(uids)])
    cols = np.concatenate([history.get(int(u), np.empty(0, dtype=np.int64)) for u in uids])
    scores[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)] = -np.inf
    return torch.topk(scores, k).indices


def predict(uids: np.ndarray, job: dict[str, Any], model: Any, test_data: Any, history: dict | None) -> np.ndarray:
    """Top-``k`` RecBole item ids for every user, in batches; masked when ``history`` is given."""
    out = []
    for start in range(0, len(uids), job["batch_users"]):
        batch = uids[start : start + job["batch_users"]]
        if history is None:
            out.append(full_sort_topk(batch, model, test_data, k=job["k"])[1].numpy())
        else:
            out.append(masked_topk(batch, model, test_data, job["k"], history).numpy())
    return np.concatenate(out).astype(np.int64)


def timed_predict(uids: np.ndarray, job: dict[str, Any], model: Any, test_data: Any, history: dict | None) -> tuple:
    """One untimed burn-in batch, then ``repeats`` timed passes over every user; the median seconds."""
    predict(uids[: job["batch_users"]], job, model, test_data, history)
    seconds, ids = [], None
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        ids = predict(uids, job, model, test_data, history)
        seconds.append(time.perf_counter() - start)
    return ids, statistics.median(seconds), seconds


def train(config: Config, model: Any, train_data: Any, valid_data: Any) -> dict[str, Any]:
    """Fit with early stopping on valid NDCG@10, then reload the best checkpoint (RecBole's own file)."""
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epochs: list[tuple[int, float]] = []
    start = time.perf_counter()
    best, _ = trainer.fit(train_data, valid_data, saved=True, callback_fn=lambda e, s: epochs.append((e, s)))
    seconds = time.perf_counter() - start
    checkpoint = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    best_epoch = max(epochs, key=lambda es: es[1])[0] if epochs else -1
    return {
        "fit_seconds": seconds,
        "epochs_run": len(epochs),
        "best_epoch": best_epoch + 1,
        "best_valid_ndcg@10": float(best),
        "valid_curve": [s for _, s in epochs],
    }


def main(job_path: str, out_dir: str) -> None:
    job = json.loads(Path(job_path).read_text())
    out = Path(out_dir)
    torch.set_num_threads(job["threads"])
    config = Config(model=job["model"], dataset=job["dataset"], config_dict=recbole_config(job))
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)  # per-epoch progress into the log (stdout) and ./log/ of the work folder
    start = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    load_seconds = time.perf_counter() - start
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    fit = train(config, model, train_data, valid_data) if job["mode"] == "train" else {"fit_seconds": 0.0}
    model.eval()
    test_set = test_data._dataset
    uids = test_set.inter_feat[test_set.uid_field].numpy()
    history = read_history(Path(job["data_path"]) / job["dataset"] / f"{job['dataset']}.history.tsv", test_set)
    masked, masked_s, masked_all = timed_predict(uids, job, model, test_data, history)
    unmasked, unmasked_s, unmasked_all = timed_predict(uids, job, model, test_data, None)
    item_tokens = test_set.field2id_token[test_set.iid_field]  # RecBole id -> token (str); 0 is [PAD]
    user_tokens = test_set.field2id_token[test_set.uid_field]
    np.save(out / "users.npy", user_tokens[uids].astype(np.int64))
    np.save(out / "topk_masked.npy", item_tokens[masked].astype(np.int64))
    np.save(out / "topk_unmasked.npy", item_tokens[unmasked].astype(np.int64))
    result = {
        **fit,
        "load_seconds": load_seconds,
        "n_items_recbole": int(test_set.item_num - 1),
        "n_test_users": len(uids),
        "inference_seconds_masked": masked_s,
        "inference_seconds_unmasked": unmasked_s,
        "inference_runs_masked": masked_all,
        "inference_runs_unmasked": unmasked_all,
        "users_per_s_masked": len(uids) / masked_s,
        "users_per_s_unmasked": len(uids) / unmasked_s,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "versions": {"recbole": recbole.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "recbole_config": {k: config[k] for k in ("hidden_size", "n_layers", "n_heads", "learning_rate", "loss_type")},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:3])

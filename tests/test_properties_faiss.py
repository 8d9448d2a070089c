"""The FAISS-facing property tests (``properties_faiss_cases.py``), each run in its own subprocess: a segfault or
abort in FAISS then fails the test here instead of killing pytest. 200 + 60 = 260 examples by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from property_support import run_isolated

from recsys.errors import ModelFormatError
from recsys.retrieval import FaissIndex

CASES = "properties_faiss_cases.py"


@pytest.mark.parametrize(
    "test", ["test_index_search_on_any_array", "test_faiss_index_files_round_trip_or_are_a_model_format_error"]
)
def test_faiss_properties_in_a_subprocess(test: str) -> None:
    output = run_isolated(CASES, test)
    print(output)  # the child's Hypothesis statistics, shown with pytest -s or -rA


def test_a_faiss_file_that_asks_for_more_memory_than_exists_is_a_model_format_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A corrupt vector count below FAISS's sanity limit makes read_index raise MemoryError (std::bad_alloc); it
    must come back as a ModelFormatError. Simulated: really allocating would need terabytes."""
    import faiss

    def bad_alloc(path: str) -> None:
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(faiss, "read_index", bad_alloc)
    with pytest.raises(ModelFormatError, match="not a readable FAISS index"):
        FaissIndex.load(tmp_path / "index.faiss")

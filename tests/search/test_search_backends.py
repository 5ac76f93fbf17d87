"""Exact top-k and the faiss backend against it."""

from __future__ import annotations

import numpy as np
import pytest

from imsim.methods.base import l2_normalize
from search.backends import ExactBackend, default_nlist, recall_at_k, top_k


def test_top_k_matches_a_full_sort() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5, 1000)).astype(np.float32)
    s, ids = top_k(scores, 7)
    want = np.argsort(-scores, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_array_equal(s, np.take_along_axis(scores, want, axis=1))


def test_top_k_ties_go_to_the_lower_id_and_k_is_capped() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]], dtype=np.float32)
    assert top_k(scores, 4)[1].tolist() == [[1, 3, 0, 2]]
    assert top_k(scores, 99)[1].tolist() == [[1, 3, 0, 2, 4]]


def test_exact_backend_chunks_queries() -> None:
    rng = np.random.default_rng(1)
    x = l2_normalize(rng.standard_normal((300, 16)))
    q = l2_normalize(rng.standard_normal((50, 16)))
    small = ExactBackend(x, chunk_bytes=4 * 300 * 7)  # 7 queries per chunk
    s1, i1 = small.search(q, 5)
    s2, i2 = ExactBackend(x).search(q, 5)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


def test_faiss_probing_every_list_is_exact() -> None:
    pytest.importorskip("faiss")
    from search.backends import FaissBackend

    rng = np.random.default_rng(2)
    x = l2_normalize(rng.standard_normal((2000, 32)))
    q = l2_normalize(rng.standard_normal((40, 32)))
    es, ei = ExactBackend(x).search(q, 10)
    fb = FaissBackend(x, nlist=16, nprobe=16)
    fs, fi = fb.search(q, 10)
    assert recall_at_k(ei, fi, 10) == 1.0
    np.testing.assert_allclose(fs, es, atol=1e-5)
    fb.nprobe = 1
    r1 = recall_at_k(ei, fb.search(q, 10)[1], 10)
    assert 0.0 < r1 < 1.0  # one of 16 lists misses neighbours of random vectors


def test_recall_and_nlist() -> None:
    assert recall_at_k(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]]), 4) == 0.5
    assert default_nlist(10_000) == 100 and default_nlist(1_000_000) == 1000
    assert default_nlist(100) == 2 and default_nlist(10) == 1

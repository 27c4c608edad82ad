"""FeatureCache on its own: round trips, encoder separation, validation, pickling, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest

from prodkg.extractors import FeatureCache
from prodkg.errors import ConfigError


def test_round_trip_and_missing_keys(tmp_path):
    cache = FeatureCache(tmp_path / "c")
    vecs = {"a": np.arange(4, dtype=np.float32), "b": np.linspace(-1, 1, 4).astype(np.float64)}
    cache.put_many("enc/1", vecs)
    got = cache.get_many("enc/1", ["a", "b", "zzz"])
    assert set(got) == {"a", "b"}
    np.testing.assert_array_equal(got["a"], vecs["a"])
    assert got["b"].dtype == np.float32
    np.testing.assert_allclose(got["b"], vecs["b"], rtol=1e-7)
    assert len(cache) == 2
    assert cache.stats()["hits"] == 2 and cache.stats()["misses"] == 1


def test_encoder_ids_do_not_collide(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("enc-a", {"k": np.ones(3, np.float32)})
    cache.put_many("enc-b", {"k": np.zeros(5, np.float32)})
    assert cache.get_many("enc-a", ["k"])["k"].tolist() == [1.0, 1.0, 1.0]
    assert cache.get_many("enc-b", ["k"])["k"].shape == (5,)
    assert cache.get_many("enc-c", ["k"]) == {}
    assert cache.stats()["per_encoder"] == {"enc-a": 1, "enc-b": 1}


def test_persists_across_instances_and_replaces(tmp_path):
    FeatureCache(tmp_path).put_many("e", {"k": np.full(2, 3.0, np.float32)})
    reopened = FeatureCache(tmp_path)
    reopened.put_many("e", {"k": np.full(2, 4.0, np.float32)})
    assert FeatureCache(tmp_path).get_many("e", ["k"])["k"].tolist() == [4.0, 4.0]
    assert len(reopened) == 1


def test_many_keys_beyond_one_sql_statement(tmp_path):
    cache = FeatureCache(tmp_path)
    vecs = {f"k{i}": np.array([i, -i], np.float32) for i in range(2500)}
    cache.put_many("e", vecs)
    got = cache.get_many("e", list(vecs))
    assert len(got) == 2500 and got["k2499"].tolist() == [2499.0, -2499.0]


def test_iter_many_streams_views_of_the_stored_vectors(tmp_path):
    """The same vectors as get_many (whose values the tests above check against what was put), each a read-only view
    rather than a copy, across SQL chunks, with hits and misses counted and a bad encoder id refused before the first
    item."""
    cache = FeatureCache(tmp_path)
    vecs = {f"k{i}": np.array([i, -i, 0.5 * i], np.float32) for i in range(2000)}
    cache.put_many("e", vecs)
    keys = [*vecs, "absent", "k7"]  # a repeated key is read once
    streamed = list(cache.iter_many("e", keys))
    assert [k for k, _ in streamed] != [] and sorted(k for k, _ in streamed) == sorted(vecs)
    for key, vec in streamed:
        np.testing.assert_array_equal(vec, vecs[key])
        assert not vec.flags.writeable and not vec.flags.owndata
    assert cache.stats()["hits"] == 2000 and cache.stats()["misses"] == 1
    with pytest.raises(ValueError, match="encoder_id"):
        cache.iter_many("", ["k"])


def test_read_blocks_gives_each_found_key_its_own_vector_across_chunks(tmp_path):
    """What extraction reads a million cached vectors through: blocks whose rows are the vectors put under their
    keys (checked against the dict put, not against iter_many), across SQL chunks; an absent key and a row of another
    width are misses; a bad encoder id or width is refused before the first block."""
    cache = FeatureCache(tmp_path)
    vecs = {f"k{i}": np.array([i, -i, 0.25 * i], np.float32) for i in range(2000)}
    cache.put_many("e", vecs)
    cache.put_many("e", {"wide": np.ones(5, np.float32)})
    seen: dict[str, np.ndarray] = {}
    n_blocks = 0
    for found, block in cache.read_blocks("e", ["absent", "wide", *reversed(list(vecs)), "k3"], 3):
        assert block.shape == (len(found), 3) and block.dtype == np.float32
        seen.update(zip(found, block))
        n_blocks += 1
    assert n_blocks >= 2 and sorted(seen) == sorted(vecs)
    for key, vec in seen.items():
        np.testing.assert_array_equal(vec, vecs[key])
    assert cache.stats()["hits"] == 2000 and cache.stats()["misses"] == 2
    with pytest.raises(ValueError, match="encoder_id"):
        cache.read_blocks("", ["k"], 3)
    with pytest.raises(ValueError, match="dim"):
        cache.read_blocks("e", ["k"], 0)


def test_rejects_bad_values(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(ValueError, match="1-D"):
        cache.put_many("e", {"k": np.ones((2, 2))})
    with pytest.raises(ValueError, match="encoder_id"):
        cache.get_many("", ["k"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="directory"):
        FeatureCache(tmp_path / "file")


def test_pickles_without_its_connection(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("e", {"k": np.ones(2, np.float32)})
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.get_many("e", ["k"])["k"].tolist() == [1.0, 1.0]


def _writer(path: str, worker: int, n: int) -> None:
    cache = FeatureCache(path, timeout=30)
    for start in range(0, n, 10):
        cache.put_many("e", {f"w{worker}-{i}": np.full(8, worker, np.float32) for i in range(start, start + 10)})


def test_concurrent_writers_from_several_processes(tmp_path):
    FeatureCache(tmp_path)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 100)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    cache = FeatureCache(tmp_path)
    assert len(cache) == 300
    assert cache.get_many("e", ["w2-99"])["w2-99"].tolist() == [2.0] * 8

"""Bytes read per decoded token (recorded weights plus the KV cache) and the host bandwidth cache (no timing)."""

from __future__ import annotations

import json

import pytest

from conftest import fake_export

from exporter.artifact import Artifact
from exporter.device import bandwidth
from exporter.roofline import kv_slots_read, manifest_token_bytes

WINDOWED = {"max_seq_len": 32, "context.requested": 32, "weight_bytes_per_token": 123_456,
            "dims.windows": [None, 8]}


def test_kv_slots_read_follow_positions_windows_and_the_cache():
    # steps at positions 4..11 read p + 1 slots (mean 8.5) on the full layer, min(p + 1, 8) (mean 7.25) on a
    # window-8 layer
    assert kv_slots_read((None, 8), 32, range(4, 12)) == pytest.approx(8.5 + 7.25)
    assert kv_slots_read((None, None), 8, range(20, 21)) == 2 * 8  # both layers capped at the cache's 8 slots


def test_roofline_reads_the_recorded_weight_bytes_and_the_kv_cache(tmp_path):
    tb = manifest_token_bytes(Artifact.open(fake_export(tmp_path / "e", **WINDOWED)).manifest, 4, 8)
    # a slot is K and V of 2 heads x 16 fp32 values (256 bytes) per layer
    assert tb.weights == 123_456 and tb.kv_dtype == "fp32" and tb.kv_cache == pytest.approx((8.5 + 7.25) * 256)
    assert tb.total == pytest.approx(123_456 + 15.75 * 256)
    int8 = Artifact.open(fake_export(tmp_path / "i", **WINDOWED, **{"recipe.spec.kv_cache": "int8",
                                                                     "recipe.label": "8da4w-g32+emb4w-g64+kv8"}))
    tb8 = manifest_token_bytes(int8.manifest, 4, 8)
    # int8: a code per value plus a 4-byte scale and a zero point per position and head
    assert tb8.kv_dtype == "int8" and tb8.kv_cache == pytest.approx(15.75 * 2 * 2 * (16 + 4 + 1))


def test_manifests_without_the_weight_bytes_get_no_roofline(tmp_path):
    old = Artifact.open(fake_export(tmp_path / "old", weight_bytes_per_token=None))
    assert manifest_token_bytes(old.manifest, 4, 8) is None
    older = Artifact.open(fake_export(tmp_path / "older", weight_bytes_per_token=None, dims=None))
    assert manifest_token_bytes(older.manifest, 4, 8) is None


def test_bandwidth_is_measured_once_per_key_and_cached(tmp_path):
    calls = []

    def fake(threads, mib, passes):
        calls.append(threads)
        return [8.0, 12.0, 10.0]

    path = tmp_path / "bw.json"
    bw, cached = bandwidth.host_bandwidth(2, path=path, measure=fake, load=lambda: 0.1)
    assert not cached and (bw.gbps, bw.median_gbps, bw.min_gbps, bw.threads) == (12.0, 10.0, 8.0, 2)
    again, cached = bandwidth.host_bandwidth(2, path=path, measure=fake, load=lambda: 0.1)
    assert cached and again == bw and calls == [2]
    bandwidth.host_bandwidth(1, path=path, measure=fake, load=lambda: 0.1)  # another thread count is another key
    assert calls == [2, 1] and len(json.loads(path.read_text())) == 2
    _, cached = bandwidth.host_bandwidth(2, path=path, measure=fake, refresh=True, load=lambda: 0.1)
    assert not cached and calls == [2, 1, 2]
    assert "best of 3 passes" in bw.source(True) and "worst 8" in bw.source(True)


def test_bandwidth_cache_survives_a_bad_file(tmp_path):
    path = tmp_path / "bw.json"
    path.write_text("not json")
    bw, cached = bandwidth.host_bandwidth(1, path=path, measure=lambda t, m, p: [5.0], load=lambda: 0.0)
    assert not cached and bw.gbps == 5.0 and json.loads(path.read_text())[bw.key]["gbps"] == 5.0


def test_a_busy_machine_is_measured_but_not_cached(tmp_path):
    path = tmp_path / "bw.json"
    bw, cached = bandwidth.host_bandwidth(1, path=path, measure=lambda t, m, p: [2.0], load=lambda: 99.0)
    assert not cached and bw.gbps == 2.0 and bw.load_avg == 99.0 and not path.exists()


def test_read_gbps_returns_one_number_per_pass():
    samples = bandwidth.read_gbps(2, buffer_mib=4, passes=3)
    assert len(samples) == 3 and all(s > 0 for s in samples)

"""Bytes read per decoded token (exact on a tiny config) and the host bandwidth cache (no timing)."""

from __future__ import annotations

import json

import pytest

from conftest import fake_export

from exporter.artifact import Artifact, DimsRecord
from exporter.build.recipes import Recipe
from exporter.device import bandwidth
from exporter.roofline import linear_bytes, manifest_token_bytes, token_bytes

DIMS = DimsRecord(hidden=64, n_heads=4, n_kv_heads=2, head_dim=16, intermediate=128, windows=(None, 8))
RECIPE = Recipe.make(linear="8da4w", group_size=32, embedding="4w", embedding_group_size=64, output="linear")


def test_linear_bytes_per_scheme():
    assert linear_bytes(64, 64, "8da4w", 32) == 2048 + 2 * 64 * 2  # nibbles + a bf16 scale per group of 32
    assert linear_bytes(64, 48, "4w", 32) == 1536 + 4 * 64  # 48 % 32 != 0: per-channel fp32 scales
    assert linear_bytes(64, 64, "4w", 0) == 2048 + 4 * 64
    assert linear_bytes(64, 64, "8da8w", 0) == 4096 + 4 * 64
    assert linear_bytes(64, 64, "none", 0) == 4 * 4096


def test_token_bytes_exact_on_a_tiny_config():
    tb = token_bytes(RECIPE, DIMS, vocab=320, max_seq_len=32, prompt_len=4, gen_len=8)
    # per layer: q, o 64x64 -> 2304 each; k, v 32x64 -> 1152 each; gate, up, down 128x64 / 64x128 -> 4608 each
    assert tb.linear == 2 * (2304 + 1152 + 1152 + 2304 + 3 * 4608)
    assert tb.output == 320 * 64 // 2 + 2 * 320 * 2
    assert tb.embedding_row == 32 + 4
    # steps at positions 4..11 read p + 1 slots (mean 8.5) on the full layer, min(p + 1, 8) (mean 7.25) on the
    # window-8 layer; a slot is K and V of 2 heads x 16 fp32
    assert tb.kv_cache == pytest.approx((8.5 + 7.25) * 256)
    assert tb.total == pytest.approx(41472 + 11520 + 36 + 4032)
    int8 = token_bytes(RECIPE, DIMS, 320, 32, 4, 8, kv_dtype="int8")
    assert int8.kv_cache == pytest.approx(15.75 * (64 + 2 * 2 * 5))



def test_mixed_precision_layers_read_their_8bit_weights():
    mixed = token_bytes(RECIPE.replace_checked(layers_8bit=(1,)), DIMS, 320, 32, 4, 8)
    plain = token_bytes(RECIPE, DIMS, 320, 32, 4, 8)
    # layer 1 at 8da8w: q, o 4096 + 256 each; k, v 2048 + 128 each; gate, up, down 8192 + 4 x out each
    layer_8bit = 2 * (4096 + 256) + 2 * (2048 + 128) + 2 * (8192 + 512) + (8192 + 256)
    assert mixed.linear == plain.linear // 2 + layer_8bit

def test_output_mode_and_cache_cap():
    out8 = Recipe.make(linear="8da4w", group_size=32, embedding="none", embedding_group_size=0, output="8w")
    tb = token_bytes(out8, DIMS, vocab=320, max_seq_len=8, prompt_len=20, gen_len=1)
    assert tb.output == 320 * 64 + 4 * 320 and tb.embedding_row == 4 * 64
    assert tb.kv_cache == 2 * 8 * 256  # both layers are capped at the cache's 8 slots


def test_manifest_token_bytes(tmp_path):
    art = Artifact.open(fake_export(tmp_path / "e"))
    tb = manifest_token_bytes(art.manifest, 4, 8)
    assert tb is not None and tb.kv_dtype == "fp32" and tb.kv_cache == pytest.approx(2 * 8.5 * 256)
    old = Artifact.open(fake_export(tmp_path / "old", dims=None))
    assert manifest_token_bytes(old.manifest, 4, 8) is None


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

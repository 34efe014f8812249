"""gguf_parsed_once: inside it a GGUF file is parsed once and gguf's name map built once; outside, as before."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")


def _write_gguf(path):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_token_list([f"t{i}" for i in range(64)])
    writer.add_tensor("token_embd.weight", np.arange(64 * 8, dtype=np.float32).reshape(64, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_each_file_is_parsed_once_inside_and_afresh_outside(tmp_path, monkeypatch):
    from exporter.build.source import gguf_parsed_once

    path = _write_gguf(tmp_path / "m.gguf")
    parses = []
    reader = gguf.GGUFReader

    def counted(p, mode="r"):
        parses.append(p)
        return reader(p, mode)

    monkeypatch.setattr(gguf, "GGUFReader", counted)
    with gguf_parsed_once():
        first = gguf.GGUFReader(path)
        with gguf_parsed_once():  # nested (load_model inside an export's load stage): the same parse
            again = gguf.GGUFReader(str(path))
        assert again is first and len(parses) == 1
        fresh = reader(path)
        assert list(first.fields) == list(fresh.fields)
        np.testing.assert_array_equal(first.tensors[0].data, fresh.tensors[0].data)
    assert gguf.GGUFReader is counted
    assert gguf.GGUFReader(path) is not first and len(parses) == 2


def test_name_map_is_built_once_per_shape_and_restored():
    from exporter.build.source import gguf_parsed_once

    build = gguf.get_tensor_name_map
    arch = gguf.MODEL_ARCH.LLAMA
    with gguf_parsed_once():
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
        assert gguf.get_tensor_name_map(arch, 3) is not gguf.get_tensor_name_map(arch, 2)
        assert gguf.get_tensor_name_map(arch, 2).get_name("model.layers.1.self_attn.q_proj") == "blk.1.attn_q"
    assert gguf.get_tensor_name_map is build

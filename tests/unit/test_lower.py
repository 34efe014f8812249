"""XNNPACK pass pruning: passes run only where their ops are, and the skip is undone afterwards."""

from __future__ import annotations

import torch

from exporter.build.lower import _PASS_TRIGGERS, _decoder_xnnpack_passes


def _edge_program(module, *example):
    from executorch.exir import EdgeCompileConfig, to_edge

    ep = torch.export.export(module, example)
    return to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).exported_program()


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.l(x) * torch.sigmoid(x)


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.relu(self.c(x)).mean(dim=(2, 3), keepdim=True)


def _pass_names(ep):
    from executorch.backends.xnnpack._passes import XNNPACKPassManager

    with _decoder_xnnpack_passes():
        return [p.__name__ for p in XNNPACKPassManager(ep).passes]


def test_decoder_partition_skips_passes_for_absent_ops():
    names = _pass_names(_edge_program(_Linear(), torch.randn(2, 8)))
    assert "ConvertToLinearPass" in names and "ConstPropPass" in names  # unlisted: always run
    for skipped in ("Conv1dUnsqueezePass", "ChannelsLastTaggedReshapePass", "FuseBatchNormPass", "DecomposeConcatenate"):
        assert skipped not in names


def test_conv_partition_keeps_its_passes():
    names = _pass_names(_edge_program(_Conv(), torch.randn(1, 3, 8, 8)))
    for kept in ("Conv1dUnsqueezePass", "ChannelsLastTaggedReshapePass", "FuseActivationPass", "RemoveRedundantCopyPass"):
        assert kept in names


def test_pass_manager_is_restored_and_triggers_name_real_passes():
    from executorch.backends.xnnpack import _passes

    init = _passes.XNNPACKPassManager.__init__
    with _decoder_xnnpack_passes():
        assert _passes.XNNPACKPassManager.__init__ is not init
    assert _passes.XNNPACKPassManager.__init__ is init
    # a renamed pass upstream would silently stop being pruned; fail loudly instead
    ep = _edge_program(_Linear(), torch.randn(2, 8))
    all_names = {p.__name__ for p in _passes.XNNPACKPassManager(ep).passes}
    assert set(_PASS_TRIGGERS) <= all_names


def test_decoder_partitioner_decomposes_once_and_delegates_the_linears(monkeypatch):
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from torch.export import ExportedProgram

    from exporter.build.lower import _decoder_partitioner

    calls = []
    original = ExportedProgram.run_decompositions

    def counted(self, *args, **kwargs):
        if "l.weight" in self.state_dict:  # the program being lowered, not the partitioner's op patterns
            calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ExportedProgram, "run_decompositions", counted)
    ep = torch.export.export(_Linear(), (torch.randn(2, 8),))
    edge = to_edge_transform_and_lower(ep, partitioner=[_decoder_partitioner()],
                                       compile_config=EdgeCompileConfig(_check_ir_validity=False))
    assert len(calls) == 1  # XNNPACK's own partitioner makes this three full re-traces
    targets = [str(n.target) for n in edge.exported_program().graph_module.graph.nodes if n.op == "call_function"]
    assert any("executorch_call_delegate" in t for t in targets)
    assert not any("linear" in t or "addmm" in t or "mm.default" in t for t in targets)  # the linear went to XNNPACK


def _quantized_linears_program():
    from torchao.quantization.quant_api import quantize_

    from exporter.build.recipes import linear_config

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.SiLU(), torch.nn.Linear(96, 64)).eval()
    quantize_(m, linear_config("8da4w", 32))
    return torch.export.export(m, (torch.randn(2, 64),))


def test_preprocess_gets_its_own_copy_and_everything_is_undone(monkeypatch):
    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend

    from exporter.build.lower import _preprocess_copies_one_at_a_time

    seen = []
    monkeypatch.setattr(XnnpackBackend, "preprocess", staticmethod(lambda program, specs: seen.append(program) or "done"))
    spy = XnnpackBackend.__dict__["preprocess"]
    ep = _edge_program(_Linear(), torch.randn(2, 8))
    with _preprocess_copies_one_at_a_time():
        assert XnnpackBackend.copy_exported_program_for_preprocess(ep, []) is ep  # copied later, one at a time
        assert XnnpackBackend.preprocess(ep, []) == "done"
    (copied,) = seen
    assert copied.graph is not ep.graph and copied.graph_module is not ep.graph_module
    assert copied.state_dict.keys() == ep.state_dict.keys()
    for name, weight in ep.state_dict.items():  # passes may write into the copy's weights
        assert copied.state_dict[name] is not weight and torch.equal(copied.state_dict[name], weight), name
    assert XnnpackBackend.__dict__["preprocess"] is spy and "copy_exported_program_for_preprocess" not in XnnpackBackend.__dict__


def test_lowered_bytes_do_not_change_when_preprocess_copies_one_at_a_time(monkeypatch):
    from contextlib import nullcontext

    from exporter.build import lower

    shared = lower.lower_to_executorch(_quantized_linears_program(), {}).buffer
    monkeypatch.setattr(lower, "_preprocess_copies_one_at_a_time", nullcontext)
    copied = lower.lower_to_executorch(_quantized_linears_program(), {}).buffer
    assert shared == copied


def test_compact_dependency_viewer_sees_the_same_downstream_nodes():
    from executorch.exir.backend.canonical_partitioners import group_partitioner
    from torch.fx.passes.infra import partitioner

    from exporter.build.lower import _compact_dependency_viewers, _CompactDependencyViewer

    class Branchy(torch.nn.Module):
        def forward(self, x, y):
            a = torch.sin(x) + y
            b = torch.cos(a) * x
            return a - b, torch.relu(y)

    gm = torch.export.export(Branchy(), (torch.randn(3), torch.randn(3))).graph_module
    want, got = partitioner._DependencyViewer(gm), _CompactDependencyViewer(gm)
    nodes = list(gm.graph.nodes)
    assert any(len(want.downstreams_of(n)) > 1 for n in nodes)
    for node in nodes:
        assert set(got.downstreams_of(node)) == want.downstreams_of(node), node.name
        assert len(got.downstreams_of(node)) == len(want.downstreams_of(node))
    originals = partitioner._DependencyViewer, group_partitioner._DependencyViewer
    with _compact_dependency_viewers():
        assert partitioner._DependencyViewer is group_partitioner._DependencyViewer is _CompactDependencyViewer
    assert (partitioner._DependencyViewer, group_partitioner._DependencyViewer) == originals

"""Lowering speed-ups (XNNPACK passes pruned, edge passes fused, copies one at a time): same program, undone after."""

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


def test_custom_meta_pass_runs_only_where_a_node_carries_custom_meta():
    ep = _edge_program(_Linear(), torch.randn(2, 8))
    assert "PropagateCustomMetaPass" not in _pass_names(ep)
    next(n for n in ep.graph.nodes if n.op == "call_function").meta["custom"] = {"tag": 1}
    assert "PropagateCustomMetaPass" in _pass_names(ep)


class _EveryRewrite(torch.nn.Module):
    """Views, a transpose, Python scalars in tensor ops and mixed dtypes: each fused rewrite has work here."""

    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(8, 8)

    def forward(self, x, n):
        y = self.l(x).view(4, 4).t().reshape(2, 8) * 0.5 + 1
        return y + n, x.size(0) * y  # float + int64 tensor: a mixed-type add


def _retraces(monkeypatch, fused: bool):
    from contextlib import nullcontext

    from torch.fx.passes.infra.pass_base import PassBase

    from exporter.build import lower

    names = []
    call = PassBase.__call__

    def counted(self, graph_module):
        names.append(type(self).__name__)
        return call(self, graph_module)

    monkeypatch.setattr(PassBase, "__call__", counted)
    if not fused:
        monkeypatch.setattr(lower, "_fused_edge_passes", nullcontext)
    torch.manual_seed(0)
    ep = torch.export.export(_EveryRewrite(), (torch.randn(2, 8), torch.arange(16).reshape(2, 8)))
    buffer = lower.lower_to_executorch(ep, {}).buffer
    monkeypatch.undo()
    return names, buffer


def test_fused_edge_passes_give_the_same_program_in_fewer_retraces(monkeypatch):
    apart, apart_bytes = _retraces(monkeypatch, fused=False)
    together, together_bytes = _retraces(monkeypatch, fused=True)
    assert together_bytes == apart_bytes
    for name in ("NormalizeTransposePass", "ReplaceBrokenOpsWithFunctionalOpsPass", "ScalarToTensorPass",
                 "SymToTensorPass", "RemoveMixedTypeOperators", "OpReplacePass", "ReplaceViewOpsWithViewCopyOpsPass"):
        assert name in apart and name not in together, name
    assert together.count("FusedOperatorRewrites") == 1 and together.count("MixedTypesAndOpReplace") == 1
    assert len(apart) - len(together) >= 6


def test_views_to_copies_rewrites_what_torchs_view_pass_rewrites():
    # ReplaceBrokenOpsWithFunctionalOpsPass also turns views into copies, so a whole lowering cannot tell
    # whether this rewrite ran; torch's pass additionally maps _unsafe_view, which is not a view op
    from exporter.build.lower import _ViewsToCopies

    class Seen:
        def call_operator(self, op, args, kwargs, meta):
            return op

    class Probe(_ViewsToCopies, Seen):
        pass

    aten = torch.ops.aten
    for op, want in ((aten._unsafe_view.default, aten.view_copy.default), (aten.view.default, aten.view_copy.default),
                     (aten.permute.default, aten.permute_copy.default), (aten.add.Tensor, aten.add.Tensor)):
        assert Probe().call_operator(op, (), {}, None) is want, op


def test_fused_operator_rewrites_keep_their_order_and_the_passes_around_them():
    from executorch.exir.passes import base_pre_op_replace_passes

    from exporter.build.lower import _OPERATOR_REWRITES, _fuse_operator_rewrites, _ViewsToCopies

    fused = _fuse_operator_rewrites(base_pre_op_replace_passes, lead=(_ViewsToCopies,))
    names = [type(getattr(p, "__wrapped__", p)).__name__ for p in base_pre_op_replace_passes]
    (merged,) = [p for p in fused if type(p).__name__ == "FusedOperatorRewrites"]
    mro = [c.__name__ for c in type(merged).__mro__]
    assert [n for n in mro if n in _OPERATOR_REWRITES] == [n for n in names if n in _OPERATOR_REWRITES]
    assert mro.index("_ViewsToCopies") < mro.index("NormalizeTransposePass")
    assert len(fused) == len(names) - len(_OPERATOR_REWRITES) + 1
    assert fused[0] is base_pre_op_replace_passes[0]  # ReplaceSymSizeOpPass still runs first


def test_dim_order_legalization_is_skipped_only_without_its_ops_and_everything_is_undone():
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge
    from executorch.exir.program import _program

    from exporter.build.lower import _fused_edge_passes

    class Mean(torch.nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 1).mean(dim=1)

    def legalize(passes):
        (p,) = [p for p in passes if "legalize" in getattr(p, "__qualname__", type(p).__name__).lower()]
        return p

    originals = (_program._get_aten_to_edge_passes, _program.OpReplacePass,
                 _program.ReplaceViewOpsWithViewCopyOpsPass, _program.edge_to_executorch_passes)
    plain = _edge_program(_Linear(), torch.randn(2, 8)).graph_module
    mean = to_edge(torch.export.export(Mean(), (torch.randn(2, 3, 4),)),
                   compile_config=EdgeCompileConfig(_check_ir_validity=False)).exported_program().graph_module
    with _fused_edge_passes():
        skip = legalize(_program.edge_to_executorch_passes(ExecutorchBackendConfig()))
        untouched = skip(plain)
        assert untouched.graph_module is plain and not untouched.modified
        assert skip(mean).modified  # mean.dim is one of its ops: it runs
    assert (_program._get_aten_to_edge_passes, _program.OpReplacePass,
            _program.ReplaceViewOpsWithViewCopyOpsPass, _program.edge_to_executorch_passes) == originals

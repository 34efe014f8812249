"""torch.export of the static-cache decoder and its lowering to an XNNPACK-delegated ExecuTorch program."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.fx.passes.infra.pass_base import PassResult

from ..errors import ExportError


@dataclass(frozen=True)
class LoweredProgram:
    buffer: bytes
    lower_s: float
    serialize_s: float
    delegated_ops: int
    non_delegated_ops: dict[str, int]


def runner_metadata(lm, *, bos_id: int | None, eos_ids: list[int]) -> dict:
    """Constant methods that ExecuTorch's stock LLM runners (TextLLMRunner, llama_main, LlmModule) read."""
    return {
        "get_max_seq_len": lm.max_seq_len,
        "get_max_context_len": lm.max_seq_len,
        "get_vocab_size": lm.vocab_size,
        "get_n_layers": lm.n_layers,
        "get_bos_id": bos_id if bos_id is not None else -1,
        "get_eos_ids": list(eos_ids),
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": True,
        "enable_dynamic_shape": True,
    }


def export_program(lm) -> torch.export.ExportedProgram:
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  registers llama::* ops

    # Prefill length is dynamic so a whole prompt is one call; max is one less than the cache so that
    # start_pos + seq <= max_seq_len stays provable for the tracer.
    seq = torch.export.Dim("seq", min=1, max=lm.max_seq_len - 1)
    example = (torch.zeros(1, 2, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    with torch.no_grad():
        try:
            return torch.export.export(lm, example, dynamic_shapes=({1: seq}, None), strict=False)
        except Exception as err:  # torch.export raises many types; keep the cause chained
            raise ExportError(f"torch.export failed: {type(err).__name__}: {str(err).splitlines()[0]}") from err


# XNNPACK's preprocess runs 17 graph passes over every delegate partition (62 for a 30-layer model), and
# each pass re-traces the partition with fake tensors: about a third of all lowering time. Most of them
# rewrite ops a decoder never contains. A pass listed here runs only when its partition contains one of the
# ATen ops that it rewrites (read from the passes' own sources in executorch 1.5.1), and
# PropagateCustomMetaPass (which copies node.meta["custom"] onto q/dq nodes, then re-traces) only when a node
# has such meta; passes not listed always run. Measured on a 4-layer model: lowering CPU time 27.7 s -> 18.0 s,
# logits unchanged; the custom-meta skip 15.8 -> 13.2 s of lowering, same .pte bytes.
_PASS_TRIGGERS: dict[str, frozenset[str]] = {
    "DimOrderOpsRevertPass": frozenset({"_to_dim_order_copy", "_clone_dim_order", "_empty_dim_order"}),
    "ConvertToUpsampleBilinear2d": frozenset({"upsample_bilinear2d", "_upsample_bilinear2d_aa"}),
    "ConvertToSDPAPass": frozenset({"scaled_dot_product_attention", "bmm", "_softmax"}),
    "FuseBatchNormPass": frozenset({"_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm"}),
    "DecomposeBatchNorm": frozenset({"_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm"}),
    "FuseActivationPass": frozenset({"relu", "hardtanh", "clamp"}),
    "DecomposeConcatenate": frozenset({"cat"}),
    "RemoveGetItemPass": frozenset({"max_pool2d_with_indices", "max"}),
    "InsertPadQDQPass": frozenset({"constant_pad_nd"}),
    "Conv1dUnsqueezePass": frozenset({"convolution"}),
    "PReLUReshapePass": frozenset({"prelu", "_prelu_kernel"}),
    # channels-last tagging matters only around ops XNNPACK runs in NHWC; the copy pass cleans up after it
    "ChannelsLastTaggedReshapePass": frozenset({"convolution", "upsample_bilinear2d", "mean", "max_pool2d", "amax", "max", "avg_pool2d", "prelu"}),
    "RemoveRedundantCopyPass": frozenset({"convolution", "upsample_bilinear2d", "mean", "max_pool2d", "amax", "max", "avg_pool2d", "prelu", "_to_copy"}),
}


def _aten_names(graph) -> set[str]:
    names = set()
    for node in graph.nodes:
        if node.op == "call_function":
            parts = getattr(node.target, "__name__", "").split(".")
            if len(parts) >= 2 and parts[0] == "aten":
                names.add(parts[1])
    return names


@contextmanager
def _decoder_xnnpack_passes() -> Iterator[None]:
    """While lowering, XNNPACK's pass manager skips the passes whose ops a partition does not contain."""
    from executorch.backends.xnnpack import _passes

    manager = _passes.XNNPACKPassManager
    original_init = manager.__init__

    def init(self, exported_program, passes=None):
        original_init(self, exported_program, passes)
        if passes:  # an explicit list (a compile spec asked for it) is respected
            return
        present = _aten_names(exported_program.graph)

        custom_meta = any("custom" in node.meta for node in exported_program.graph.nodes)

        def needed(pass_cls) -> bool:
            if pass_cls.__name__ == "PropagateCustomMetaPass":  # copies node.meta["custom"], then re-traces
                return custom_meta
            triggers = _PASS_TRIGGERS.get(pass_cls.__name__)
            return triggers is None or bool(present & triggers)

        self.passes = [p for p in self.passes if needed(p)]

    manager.__init__ = init
    try:
        yield
    finally:
        manager.__init__ = original_init


class _Downstreams:
    """The nodes downstream of one node, as a bit set over the graph's node order (what partitioners read)."""

    __slots__ = ("_bits", "_nodes")

    def __init__(self, bits: int, nodes: list):
        self._bits, self._nodes = bits, nodes

    def __iter__(self):
        bits = self._bits
        while bits:
            low = bits & -bits
            yield self._nodes[low.bit_length() - 1]
            bits ^= low

    def __len__(self) -> int:
        return self._bits.bit_count()


class _CompactDependencyViewer:
    """The partitioners' dependency viewer, with each node's transitive downstream nodes as one integer's bits.

    torch's and ExecuTorch's viewers keep a Python set of every node's downstream nodes (ExecuTorch's its
    upstream nodes too, which nothing reads): quadratic in the graph, and the XNNPACK partitioner builds both.
    For SmolLM2-135M's graph that was 0.6 GB of sets, the lowering's peak memory. The partitioners only ask
    whether any downstream node lies in a partition, which does not depend on the order they come in.
    """

    def __init__(self, graph_module) -> None:
        self._nodes = list(graph_module.graph.nodes)
        index = {node: i for i, node in enumerate(self._nodes)}
        self._index = index
        self._bits = [0] * len(self._nodes)
        for i in range(len(self._nodes) - 1, -1, -1):
            bits = 0
            for user in self._nodes[i].users:
                j = index[user]
                bits |= (1 << j) | self._bits[j]
            self._bits[i] = bits

    def downstreams_of(self, node) -> _Downstreams:
        return _Downstreams(self._bits[self._index[node]], self._nodes)


@contextmanager
def _compact_dependency_viewers() -> Iterator[None]:
    """While lowering, torch's and ExecuTorch's partitioners use _CompactDependencyViewer."""
    from executorch.exir.backend.canonical_partitioners import group_partitioner
    from torch.fx.passes.infra import partitioner

    modules = (partitioner, group_partitioner)
    originals = [m._DependencyViewer for m in modules]
    for m in modules:
        m._DependencyViewer = _CompactDependencyViewer
    try:
        yield
    finally:
        for m, original in zip(modules, originals):
            m._DependencyViewer = original


@contextmanager
def _preprocess_copies_one_at_a_time() -> Iterator[None]:
    """While lowering, each partition is deep-copied for XNNPACK's preprocess just before it is preprocessed.

    ExecuTorch deep-copies every partition's program (in case a backend edits the graph) all at once, then
    preprocesses them one by one: a second copy of every delegated weight alive at the same time. Making each
    copy inside its own preprocess gives every partition the same private copy, one at a time. (Sharing the
    weights with the copy instead is not safe: XNNPACK's passes do write into fp32 weights, measured on the
    Phi-3 shape in tests/integration/test_export.py.)
    """
    import copy

    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend

    own_copy = XnnpackBackend.__dict__.get("copy_exported_program_for_preprocess")  # None: inherited
    own_preprocess = XnnpackBackend.__dict__["preprocess"]
    preprocess = XnnpackBackend.preprocess

    XnnpackBackend.copy_exported_program_for_preprocess = classmethod(lambda cls, edge_program, specs: edge_program)
    XnnpackBackend.preprocess = staticmethod(lambda edge_program, specs: preprocess(copy.deepcopy(edge_program), specs))
    try:
        yield
    finally:
        XnnpackBackend.preprocess = own_preprocess
        if own_copy is None:
            del XnnpackBackend.copy_exported_program_for_preprocess
        else:
            XnnpackBackend.copy_exported_program_for_preprocess = own_copy


# ExecuTorch's conversion to the edge dialect re-traces the whole program with fake tensors once per pass:
# each re-trace of SmolLM2-135M costs about 10 s. These passes only rewrite single operator calls and hand
# every call on through `super().call_operator` (read from their sources in executorch 1.5.1), so a class
# that inherits them all in their order applies the same rewrites, in the same order, in one re-trace.
_OPERATOR_REWRITES = ("NormalizeTransposePass", "ReplaceBrokenOpsWithFunctionalOpsPass", "ScalarToTensorPass",
                      "SymToTensorPass")


class _Rewrites:
    def call(self, graph_module):
        # ScalarToTensorPass reports only its own changes; the fused pass reports that it re-traced
        return PassResult(super().call(graph_module).graph_module, True)


class _ViewsToCopies:
    """torch's ReplaceViewOpsWithViewCopyOpsPass as an operator rewrite: on its own base class it re-traces alone."""

    def call_operator(self, op, args, kwargs, meta):
        from torch._export.passes.replace_view_ops_with_view_copy_ops_pass import (
            _NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS,
            get_view_copy_of_view_op,
        )
        from torch._ops import HigherOrderOperator

        if op in _NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS:
            op = _NON_FUNCTIONAL_OPS_TO_FUNCTIONAL_OPS[op]
        elif not isinstance(op, HigherOrderOperator):
            op = get_view_copy_of_view_op(op._schema) or op
        return super().call_operator(op, args, kwargs, meta)


class _Unchanged:
    def __call__(self, graph_module):
        return PassResult(graph_module, False)


def _fuse_operator_rewrites(passes: list, lead: tuple = ()) -> list:
    """`passes` with each run of consecutive _OPERATOR_REWRITES passes replaced by one pass that inherits them.

    `lead` (rewrite classes) joins the first run, ahead of its passes.
    """
    out, run = [], []
    for p in [*passes, None]:
        instance = getattr(p, "__wrapped__", p)  # ExecuTorch's pass lists hold them wrapped in functions
        if p is not None and type(instance).__name__ in _OPERATOR_REWRITES:
            run.append(type(instance))
            continue
        if run:
            out.append(type("FusedOperatorRewrites", (_Rewrites, *lead, *run), {})())
            run, lead = [], ()
        if p is not None:
            out.append(p)
    return out


@contextmanager
def _fused_edge_passes() -> Iterator[None]:
    """While lowering, the edge dialect's operator-rewriting passes re-trace the program together, not apart.

    `RemoveMixedTypeOperators` (the last pass before the aten -> edge op replacement, which also only rewrites
    calls) joins that replacement. After lowering, `to_executorch` runs a pass that inserts dim-order copies
    before five portable ops (none of which a decoder leaves outside the delegate) and then re-traces the
    program again anyway; the first is skipped where none of its ops is in the graph. The .pte bytes are the
    same (tests/unit/test_lower.py; the SmolLM2 export too).
    """
    from executorch.exir.passes.legalize_portable_dim_order_pass import (
        LegalizePortableDimOrderPass,
    )
    from executorch.exir.passes.remove_mixed_type_operators import (
        RemoveMixedTypeOperators,
    )
    from executorch.exir.program import _program

    get_passes, replace, views, to_executorch_passes = (
        _program._get_aten_to_edge_passes, _program.OpReplacePass, _program.ReplaceViewOpsWithViewCopyOpsPass,
        _program.edge_to_executorch_passes)

    mixed_and_replace = type("MixedTypesAndOpReplace", (RemoveMixedTypeOperators, replace), {})

    def aten_to_edge_passes(config):
        pre, post = get_passes(config)
        # without dim-order ops (our config) nothing runs between the two
        last = getattr(pre[-1], "__wrapped__", pre[-1]) if pre else None
        fuse = isinstance(last, RemoveMixedTypeOperators) and config._skip_dim_order
        _program.OpReplacePass = mixed_and_replace if fuse else replace
        fused = _fuse_operator_rewrites(pre[:-1] if fuse else pre, lead=(_ViewsToCopies,))
        # the view rewrite ran just before these (only ReplaceSymSizeOpPass, a renaming of sym_size, between)
        took_views = any(isinstance(p, _ViewsToCopies) for p in fused)
        _program.ReplaceViewOpsWithViewCopyOpsPass = _Unchanged if took_views else views
        return fused, post

    def legalize_where_needed(legalize):
        def run(graph_module):
            targets = legalize._target_ops
            if any(n.target in targets for m in graph_module.modules() if isinstance(m, torch.fx.GraphModule)
                   for n in m.graph.nodes):
                return legalize(graph_module)
            return PassResult(graph_module, False)
        return run

    def executorch_passes(*args, **kwargs):
        return [legalize_where_needed(p) if isinstance(p, LegalizePortableDimOrderPass) else p
                for p in to_executorch_passes(*args, **kwargs)]

    _program._get_aten_to_edge_passes = aten_to_edge_passes
    _program.edge_to_executorch_passes = executorch_passes
    try:
        yield
    finally:
        (_program._get_aten_to_edge_passes, _program.OpReplacePass, _program.ReplaceViewOpsWithViewCopyOpsPass,
         _program.edge_to_executorch_passes) = get_passes, replace, views, to_executorch_passes


def _decoder_partitioner():
    """XNNPACK's partitioner, with the program decomposed once instead of three times.

    `to_edge_transform_and_lower` re-traces the whole program for every `run_decompositions`: once to
    functionalize it, then (for a partitioner whose `ops_to_not_decompose` returns a per-node check, as
    XNNPACK's does) twice more around the check. Each trace costs about a seventh of the lowering of a
    decoder. Here the program is decomposed once, before, with XNNPACK's ops kept whole, and the later empty
    functionalizing pass is answered with that program. Dropping the per-node check keeps an op whole even
    where XNNPACK would reject it; every op of this decoder that XNNPACK keeps is delegated (checked in
    tests/unit/test_lower.py and by the .pte bytes, identical before and after on a 2-layer SmolLM2 shape).
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir.tracer import _default_decomposition_table

    class DecoderPartitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            ops, _check = super().ops_to_not_decompose(ep)
            return ops, None

        def transform_for_pre_decomposition(self, ep):
            ep = super().transform_for_pre_decomposition(ep)
            table = _default_decomposition_table()
            for op in self.ops_to_not_decompose(ep)[0]:
                table.pop(op, None)
            decomposed = ep.run_decompositions(table)
            full = decomposed.run_decompositions

            def run_decompositions(decomp_table=None, **kwargs):
                return decomposed if decomp_table == {} and not kwargs else full(decomp_table, **kwargs)

            decomposed.run_decompositions = run_decompositions
            return decomposed

    return DecoderPartitioner()


def lower_to_executorch(
    program: torch.export.ExportedProgram, metadata: dict, progress: Callable[[str], None] = lambda s: None
) -> LoweredProgram:
    from executorch.exir import (
        EdgeCompileConfig,
        ExecutorchBackendConfig,
        to_edge_transform_and_lower,
    )
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import (
        ConstraintBasedSymShapeEvalPass,
    )

    from .memory import release_freed_memory
    from .threads import torch_threads

    t0 = time.perf_counter()
    progress("lowering to ExecuTorch with the XNNPACK delegate")
    # One torch thread: lowering is Python tracing around small tensor ops (see threads.py).
    try:
        with torch_threads(1), _decoder_xnnpack_passes(), _preprocess_copies_one_at_a_time(), \
                _compact_dependency_viewers(), _fused_edge_passes():
            edge = to_edge_transform_and_lower(
                program,
                partitioner=[_decoder_partitioner()],
                compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
                constant_methods=metadata,
            )
        t1 = time.perf_counter()
        release_freed_memory()  # the partitions' copies and preprocess temporaries, before serialization
        delegated, other = _op_summary(edge.exported_program().graph_module)
        progress("serializing the ExecuTorch program")
        with torch_threads(1), _fused_edge_passes():
            et = edge.to_executorch(
                ExecutorchBackendConfig(
                    extract_delegate_segments=True,
                    do_quant_fusion_and_const_prop=True,
                    memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                    sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
                )
            )
            buffer = et.buffer
    except Exception as err:
        raise ExportError(f"lowering failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from err
    t2 = time.perf_counter()
    return LoweredProgram(buffer, t1 - t0, t2 - t1, delegated, other)


def _op_summary(gm) -> tuple[int, dict[str, int]]:
    delegated = 0
    other: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif name not in ("getitem", "sym_size", "_local_scalar_dense") and not name.startswith("sym_"):
            other[name] = other.get(name, 0) + 1
    return delegated, other

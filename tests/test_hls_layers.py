"""hls4ml front end: our extension layers and the MMFreeEngine backend.

The QKeras decode-step model is parsed by hls4ml 1.3.0 with our Keras handlers;
the graph's weight variables must be the reference's own numbers (ternary W_q and
γ bit for bit, norm weights, the MLGRU lower bounds in float64), since the
engine project is written from them. The backend and writer are registered the
way hls4ml's own VivadoAccelerator backend is (register_backend, register_writer,
register_flow) and emit no per-layer C++.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmfree_hls.config import ModelConfig
from mmfree_hls.engine.presets import PresetError, get_preset
from mmfree_hls.reference import MMFreeLM, bitlinear_names

pytest.importorskip("hls4ml")        # the design extra

from mmfree_hls.design import hls4ml_backend as hb  # noqa: E402
from mmfree_hls.design.hls_layers import ConversionError  # noqa: E402

CFG = ModelConfig(vocab_size=80, hidden_size=64, num_hidden_layers=2, intermediate_size=96)
PRESET = get_preset("pynq-z2", "on-chip")


@pytest.fixture(scope="module")
def model() -> MMFreeLM:
    return MMFreeLM.random(CFG, seed=9)


@pytest.fixture(scope="module")
def graph(model, tmp_path_factory):
    return hb.hls_model(model, tmp_path_factory.mktemp("graph"), PRESET, "2bit", extra={"note": "test"})


def _keras_name(prefix: str) -> str:
    if prefix == "lm_head":
        return prefix
    l, proj = prefix.split(".")[2], prefix.split(".")[-1]
    return f"l{l}_{proj}"


def test_graph_weight_variables_are_the_references(graph, model):
    layers = {n.name: n for n in graph.get_layers()}
    for prefix in bitlinear_names(CFG):
        node, tw = layers[_keras_name(prefix)], model.ternary[prefix]
        w_q = node.get_weights("weight").data
        assert w_q.dtype == np.int8 and np.array_equal(w_q, tw.w_q), prefix
        assert set(np.unique(w_q)) <= {-1, 0, 1}
        assert node.get_weights("gamma").data[0] == tw.gamma, prefix          # bit for bit
        np.testing.assert_array_equal(node.get_weights("norm").data, model.params[prefix + ".norm.weight"])
    for l in range(CFG.num_hidden_layers):
        p = f"model.layers.{l}."
        for name, key in ((f"l{l}_attn_norm", "attn_norm.weight"), (f"l{l}_mlp_norm", "mlp_norm.weight"),
                          (f"l{l}_g_norm", "attn.g_norm.weight")):
            np.testing.assert_array_equal(layers[name].get_weights("weight").data, model.params[p + key])
        lb = layers[f"l{l}_mlgru"].get_weights("lower_bound").data
        assert lb.dtype == np.float64 and np.array_equal(lb, model.lb[l])    # the reference's float64 bounds
    np.testing.assert_array_equal(layers["norm"].get_weights("weight").data, model.params["model.norm.weight"])
    assert CFG.use_lower_bound and np.ptp(model.lb[1]) > 0                    # the bounds were really exercised


def test_engine_model_rebuilt_from_the_graph(graph, model):
    built = hb.engine_model(graph)
    assert built is hb.engine_model(graph)                                    # lowered once, by the flow
    assert sorted(built.ternary) == sorted(model.ternary)
    hb.check_same_model(built, model)
    np.testing.assert_array_equal(built.lb, model.lb)
    x = model.embed(5)
    s = 0.2 * np.random.default_rng(0).standard_normal((CFG.num_hidden_layers, CFG.input_dim))
    for a, b in zip(built.decode_step(x, s), model.decode_step(x, s)):
        np.testing.assert_array_equal(a, b)                                  # the same golden model
    with pytest.raises(KeyError, match="no embedding table"):
        built.embed(5)


def test_backend_writer_and_flows_are_registered():
    import hls4ml
    from hls4ml.backends import VitisBackend
    from hls4ml.model.flow import get_flow
    from hls4ml.writer import VitisWriter
    hb.register()
    hb.register()                                                             # idempotent
    backend = hls4ml.backends.get_backend("MMFreeEngine")
    assert isinstance(backend, VitisBackend) and isinstance(backend.writer, VitisWriter)
    assert type(backend.writer).__name__ == "MMFreeEngineWriter"
    assert backend.get_default_flow() == "mmfreeengine:ip"
    assert get_flow("mmfreeengine:write").optimizers == ["make_stamp", "mmfreeengine:write_hls"]
    assert get_flow("mmfreeengine:lower").optimizers == ["mmfreeengine:engine_lowering"]
    assert "optimize" in get_flow("mmfreeengine:lower").requires


def test_config_section_carries_the_preset(graph):
    sec = graph.config.get_config_value("MMFreeEngine")
    assert (sec["board"], sec["tier"], sec["packing"]) == ("pynq-z2", "on-chip", "2bit")
    assert hb.section_preset(sec) == PRESET
    assert sec["record"] == {"note": "test"} and sec["model"] == CFG.to_dict()
    assert graph.config.get_config_value("Part") == PRESET.board.part
    assert graph.config.get_config_value("ClockPeriod") == pytest.approx(1000.0 / PRESET.clock_mhz)
    knobs = dict(sec["knobs"], vector_lanes=8)
    assert hb.section_preset(dict(sec, knobs=knobs)).vector_lanes == 8


def test_writer_emits_the_engine_not_per_layer_cpp(graph, model, tmp_path):
    from mmfree_hls.engine.project import write_project
    graph.write()
    root = graph.config.get_output_dir()
    written = sorted(p.relative_to(root).as_posix() for p in __import__("pathlib").Path(root).rglob("*")
                     if p.is_file())
    write_project(model, tmp_path / "direct", PRESET, "2bit")
    direct = sorted(p.relative_to(tmp_path / "direct").as_posix() for p in (tmp_path / "direct").rglob("*")
                    if p.is_file())
    assert written == direct                                                  # no myproject.cpp, no nnet_utils/
    assert "firmware/mmfree_engine_top.cpp" in written


def test_full_precision_bitlinear_is_refused(tmp_path):
    import hls4ml
    from mmfree_hls.design.keras_model import build_keras_model
    hb.register()
    fp = build_keras_model(CFG, MMFreeLM.random(CFG).params, form="step", quantize=False)
    with pytest.raises(ConversionError, match=r"l0_i_proj: a full-precision BitLinear \(quantize=False\)"):
        hls4ml.converters.convert_from_keras_model(
            fp, output_dir=str(tmp_path), backend="MMFreeEngine", model_config=CFG.to_dict())


def test_graph_of_another_model_config_is_named(model, tmp_path):
    deeper = CFG.to_dict() | {"num_hidden_layers": 3}
    import hls4ml
    hb.register()
    with pytest.raises(ConversionError, match="the hls4ml graph has no layer 'l2_attn_norm'"):
        hls4ml.converters.convert_from_keras_model(
            model.to_keras("step"), output_dir=str(tmp_path), backend="MMFreeEngine", model_config=deeper)
    wider = CFG.to_dict() | {"vocab_size": 96}
    with pytest.raises(ConversionError, match=r"'lm_head': weight has shape \(80, 64\).*\(96, 64\)"):
        hls4ml.converters.convert_from_keras_model(
            model.to_keras("step"), output_dir=str(tmp_path), backend="MMFreeEngine", model_config=wider)


def test_backend_arguments_are_checked(model, tmp_path):
    import hls4ml
    hb.register()
    with pytest.raises(ConversionError, match="needs model_config"):
        hls4ml.converters.convert_from_keras_model(model.to_keras("step"), output_dir=str(tmp_path),
                                                   backend="MMFreeEngine")
    with pytest.raises(PresetError, match="tier 'fast' is not one of"):
        hls4ml.converters.convert_from_keras_model(model.to_keras("step"), output_dir=str(tmp_path),
                                                   backend="MMFreeEngine", tier="fast",
                                                   model_config=CFG.to_dict())


def test_per_layer_settings_are_refused(model, tmp_path):
    import hls4ml
    hb.register()
    cfg = {"Model": {"Precision": "fixed<32,12>", "ReuseFactor": 1},
           "LayerName": {"l0_i_proj": {"Precision": "fixed<16,6>"}}}
    with pytest.raises(ConversionError, match=r"cannot be honoured: l0_i_proj \(precision\).*frac_bits"):
        hls4ml.converters.convert_from_keras_model(model.to_keras("step"), output_dir=str(tmp_path),
                                                   backend="MMFreeEngine", hls_config=cfg,
                                                   model_config=CFG.to_dict())


def test_build_and_predict_say_what_to_do(graph):
    with pytest.raises(ConversionError, match="mmfree synth hls"):
        graph.build()
    with pytest.raises(ConversionError, match="call compile"):
        graph.predict([np.zeros(CFG.d, np.float32)] + [np.zeros(CFG.input_dim, np.float32)] * 2)


def test_predict_checks_its_inputs():
    class Lib:                                                              # dimensions of a compiled engine
        d, L, e, V = 4, 2, 3, 5

        def step(self, x, s):
            return np.full(5, x.sum(), np.float32), s + 1

    lib = Lib()
    with pytest.raises(ConversionError, match=r"\[x_t, state_0, \.\.\., state_1\] \(3 arrays\), got 2"):
        hb._predict(lib, [np.zeros(4), np.zeros(3)])
    with pytest.raises(ConversionError, match=r"state_1 has shape \(4,\); expected \(3,\) or \(n, 3\)"):
        hb._predict(lib, [np.zeros(4), np.zeros(3), np.zeros(4)])
    with pytest.raises(ConversionError, match=r"state_0 has shape \(3, 3\).*same n for every input"):
        hb._predict(lib, [np.zeros((2, 4)), np.zeros((3, 3)), np.zeros((3, 3))])
    logits, s0, s1 = hb._predict(lib, [np.ones((2, 4)), np.zeros((2, 3)), np.ones((2, 3))])
    assert logits.shape == (2, 5) and np.all(logits == 4) and np.all(s0 == 1) and np.all(s1 == 2)

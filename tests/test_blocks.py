import pytest

from edgeeff.model import blocks
from edgeeff.errors import VariantError
from edgeeff.model.variants import VARIANTS, compound


@pytest.mark.parametrize("name", list(VARIANTS))
def test_round_trip_every_variant(name):
    variant = VARIANTS[name]
    decoded = blocks.decode_stages(variant.stages)
    assert tuple(blocks.encode(b) for b in decoded) == tuple(variant.stages)
    assert blocks.decode_stages([blocks.encode(b) for b in decoded]) == decoded


def test_round_trip_custom_phi():
    v = compound(1.5)
    assert tuple(blocks.encode(b) for b in v.block_args) == v.stages


def test_decode_fields():
    b = blocks.decode("r4_k5_s2_e6_i112_o192_se0.25")
    assert (b.repeats, b.kernel, b.stride, b.expand, b.filters_in, b.filters_out) == (4, 5, 2, 6, 112, 192)
    assert b.se_ratio == 0.25 and not b.fused and b.id_skip
    fused = blocks.decode("r2_k3_s1_e1_i24_o24_c1_noskip")
    assert fused.fused and not fused.id_skip and fused.se_ratio == 0
    assert blocks.encode(fused) == "r2_k3_s1_e1_i24_o24_c1_noskip"


@pytest.mark.parametrize("bad", ["r1_k3_s1_e1_i32", "r1_k3_s1_e1_i32_o16_zz9", "rX_k3_s1_e1_i32_o16", "r1_r2_k3_s1_e1_i3_o4"])
def test_decode_rejects(bad):
    with pytest.raises(VariantError):
        blocks.decode(bad)

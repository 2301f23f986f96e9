"""The sample contract: sources declare their fields; views are made by the view operations of a field's kind."""
import numpy as np
import pytest

from selfsup.data import open_data
from selfsup.data.sources import ArraySource
from selfsup.fields import FIELD_KINDS, IMAGE_FIELDS, check_fields
from selfsup.views import ViewSpec
from selfsup.views.dataset import FIELD_VIEWS, ViewDataset, viewed_field


def test_image_sources_declare_their_fields_and_images_have_view_operations():
    splits = open_data("digits")
    assert splits.train.fields == IMAGE_FIELDS == {"image": "image", "label": "label"}
    check_fields(splits.train.fields, "digits")
    assert viewed_field(splits.train) == ("image", "image")
    assert "image" in FIELD_VIEWS and set(IMAGE_FIELDS.values()) <= set(FIELD_KINDS)


def test_a_field_kind_without_view_operations_fails_at_start_with_the_kinds_that_have_them():
    source = ArraySource(np.zeros((4, 3, 8, 8), np.uint8))
    source.fields = {"spikes": "spike_train"}  # a kind nobody registered (audio and video now are)
    with pytest.raises(ValueError, match="spikes.*view operations exist for: image"):
        ViewDataset(source, ViewSpec(), 8, seed=0)
    with pytest.raises(ValueError, match="kind 'spike_train', which is not registered"):
        check_fields(source.fields, "a source")

import pytest


@pytest.fixture(scope="session")
def judge():
    """The packaged shapes judge, loaded once for all metrics tests."""
    from keras_muse.metrics import ShapesAttributeClassifier

    return ShapesAttributeClassifier.from_preset("shapes_attribute_classifier")

import pytest

from helpers import make_tiny_preprocessor


@pytest.fixture(scope="session")
def preprocessor():
    return make_tiny_preprocessor()

import pytest


@pytest.fixture(scope="session")
def litemedsam():
    """The real LiteMedSAM with its shipped, hash-verified weights (built once per test run)."""
    from xaiseg.models.litemedsam import LiteMedSAM

    return LiteMedSAM()

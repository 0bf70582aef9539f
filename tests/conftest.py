"""Shared pytest fixtures."""
import pytest


@pytest.fixture(scope="session")
def default_gguf():
    """Path of the default model GGUF (SmolLM2-135M-Instruct Q4_1), fetched into the cache once."""
    from tinyqmoe.assets import model_path

    return model_path("default")

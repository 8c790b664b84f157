"""Manifests of the embedded real data, built once per test session."""
import pytest

from fracturelib import config
from fracturelib.data import build_manifest


@pytest.fixture(scope="session")
def fracatlas():
    return build_manifest(config.DEFAULT_FRACATLAS)


@pytest.fixture(scope="session")
def bone_break():
    return build_manifest(config.DEFAULT_BONE_BREAK)

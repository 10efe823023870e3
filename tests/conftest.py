"Tests never write into the user's cache folder: COMET_NB_CACHE points at a temporary one for the session."
import os
import tempfile

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache():
    old = os.environ.get("COMET_NB_CACHE")
    with tempfile.TemporaryDirectory(prefix="comet_nb_test_cache_") as d:
        os.environ["COMET_NB_CACHE"] = d
        yield d
    if old is None: os.environ.pop("COMET_NB_CACHE", None)
    else: os.environ["COMET_NB_CACHE"] = old

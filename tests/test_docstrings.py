"""The examples in the package's docstrings run and print what they say."""

import doctest
import importlib
import pkgutil

import pytest

import pytorch_grad_cam

MODULES = [
    m.name
    for m in pkgutil.walk_packages(pytorch_grad_cam.__path__, "pytorch_grad_cam.")
    if not m.name.endswith("demo.train")
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert failures == 0

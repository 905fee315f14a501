"""The documentation site's sources: every page resolves, every tutorial has a page.

CI builds the site itself (``mkdocs build --strict``); these tests check what the build takes
from the README and the scripts, without MkDocs.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import pytorch_grad_cam

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HELPERS = {"example_utils", "timm_example_utils", "make_readme_images"}


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def tutorials() -> list[str]:
    return sorted(p.stem for p in (ROOT / "usage_examples").glob("*.py") if p.stem not in HELPERS)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"([\w/-]+\.md)\s*$", config, re.M))
    on_disk = {str(p.relative_to(DOCS)) for p in pages()}
    assert listed == on_disk
    assert "hooks.py" in config and "exclude_docs" in config


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_directives_resolve(hooks, page):
    markdown = page.read_text(encoding="utf-8")
    assert markdown.startswith("# "), "every page starts with its title"
    expanded = hooks.expand(markdown, str(page.relative_to(DOCS)), DOCS)
    assert "<!-- readme" not in expanded and "<!-- example" not in expanded
    assert len(expanded.strip().splitlines()) > 2


def test_every_tutorial_script_has_a_page_and_a_readme_entry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in tutorials():
        page = DOCS / "tutorials" / f"{name}.md"
        assert page.is_file(), f"no docs page for usage_examples/{name}.py"
        assert f"<!-- example: {name} -->" in page.read_text(encoding="utf-8")
        assert f"(usage_examples/{name}.py)" in readme, f"{name} is not in the README"


def test_example_page_has_the_docstring_command_and_source(hooks):
    page = hooks.example_page("detection_example")
    assert page.startswith("Explain the detections of a torchvision Faster R-CNN")
    assert "Usage:\n\n    python usage_examples/detection_example.py" in page
    assert "python usage_examples/detection_example.py --help" in page
    assert "def map_in_boxes(" in page  # the source itself
    with pytest.raises(ValueError, match="does not exist"):
        hooks.example_page("no_such_example")


def test_readme_sections_are_whole_and_missing_ones_fail(hooks):
    text = "# T\n\nintro\n\n## One\n\na\n\n### Sub\n\nb\n\n## Two\n\nc\n"
    assert hooks.readme_section("One", text) == "## One\n\na\n\n### Sub\n\nb\n"
    assert hooks.readme_section("Two", text) == "## Two\n\nc\n"
    with pytest.raises(ValueError, match="no section '## Three'"):
        hooks.readme_section("Three", text)


def test_a_section_named_like_the_page_loses_its_heading(hooks):
    expanded = hooks.expand("# The 2021 API\n\n<!-- readme: The 2021 API -->\n", "x.md", DOCS)
    assert expanded.count("The 2021 API") == 1 and "DeprecationWarning" in expanded


def test_links_are_rewritten_for_the_site(hooks):
    markdown = (
        "![pic](docs/images/methods.png) [`cam.py`](cam.py) [web](https://example.org) "
        "[here](#section) [vit](usage_examples/vit_example.py)"
    )
    assert hooks.fix_links(markdown, "tutorials/page.md", DOCS) == (
        "![pic](../images/methods.png) `cam.py` [web](https://example.org) "
        "[here](#section) [vit](../tutorials/vit_example.md)"
    )
    assert hooks.fix_links("![p](docs/images/methods.png)", "index.md", DOCS) == (
        "![p](images/methods.png)"
    )


def test_methods_page_documents_every_exported_method(hooks):
    entries = hooks.method_entries()
    assert "::: pytorch_grad_cam.finer_cam.FinerCAM\n" in entries  # built on another method
    for name in pytorch_grad_cam.__all__:
        cls = getattr(pytorch_grad_cam, name)
        if isinstance(cls, type) and issubclass(cls, pytorch_grad_cam.BaseCAM):
            if cls is not pytorch_grad_cam.BaseCAM:
                assert f"::: {cls.__module__}.{name}\n" in entries
    assert "AblationLayer\n" not in entries and ".BaseCAM\n" not in entries


def test_api_page_documents_every_public_module_besides_the_methods():
    import pkgutil

    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: (\S+)$", text, re.M))
    method_modules = {
        getattr(pytorch_grad_cam, name).__module__
        for name in pytorch_grad_cam.__all__
        if isinstance(getattr(pytorch_grad_cam, name), type)
    }
    missing = []
    for info in pkgutil.walk_packages(pytorch_grad_cam.__path__, "pytorch_grad_cam."):
        parts = info.name.split(".")
        if info.ispkg or any(p.startswith("_") for p in parts) or parts[1] in ("cli", "demo"):
            continue
        if info.name in method_modules and info.name != "pytorch_grad_cam.ablation_layer":
            continue  # on the methods page
        if not any(d == info.name or d.startswith(info.name + ".") for d in documented):
            missing.append(info.name)
    assert not missing, f"docs/api.md has no entry for {missing}"

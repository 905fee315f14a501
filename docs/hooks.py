"""MkDocs hook: the site's pages include README sections and the tutorial scripts, so that
their text lives in one place (the README stays the primary document).

A page uses these directives, each an HTML comment alone on a line:

``<!-- readme: Section title -->``
    the README section with that ``## `` heading, up to the next ``## `` heading;
``<!-- example: detection_example -->``
    the script's docstring as the page's text, how to run it, then its source;
``<!-- methods -->``
    one API entry (mkdocstrings) per CAM method the package exports, with its formula;

A directive naming a missing section or script stops the build.
"""

from __future__ import annotations

import ast
import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES = ROOT / "usage_examples"
DIRECTIVE = re.compile(r"^<!-- (readme|example|methods)(?:: (.+?))? -->$", re.M)
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def readme_section(title: str, text: str | None = None) -> str:
    """The README's ``## title`` section (heading included), up to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8") if text is None else text
    sections = re.split(r"^(?=## )", text, flags=re.M)
    for section in sections:
        if section.startswith(f"## {title}\n"):
            return section.rstrip() + "\n"
    raise ValueError(f"README.md has no section '## {title}'")


def fix_links(markdown: str, page_path: str, docs_dir: Path) -> str:
    """Make the README's repository-relative links work from ``page_path`` in the site.

    Pictures under ``docs/`` and pages of the site are linked relative to the page; a link to a
    tutorial script goes to its page; other repository files are named, not linked.
    """
    up = "../" * page_path.count("/")

    def replace(match: re.Match[str]) -> str:
        bang, text, target = match.groups()
        if target.startswith(("http://", "https://", "#", "mailto:")):
            return match.group(0)
        if target.startswith("docs/") and (ROOT / target).exists():
            return f"{bang}[{text}]({up}{target[len('docs/') :]})"
        name = posixpath.splitext(posixpath.basename(target))[0]
        if (
            target.startswith("usage_examples/")
            and (docs_dir / "tutorials" / f"{name}.md").exists()
        ):
            return f"[{text}]({up}tutorials/{name}.md)"
        return text

    return LINK.sub(replace, markdown)


def rst_to_markdown(docstring: str) -> str:
    """The few reStructuredText habits of the examples' docstrings, in Markdown."""
    text = re.sub(r"::\n", ":\n", docstring)  # "Usage::" + indented block: a code block
    return text.replace("\\\\", "\\")


def example_page(name: str) -> str:
    """A tutorial: the script's docstring, the command that runs it, and its source."""
    path = EXAMPLES / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"usage_examples/{name}.py does not exist")
    source = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(source)) or ""
    summary, _, body = docstring.partition("\n")
    return (
        f"{summary}\n\n{rst_to_markdown(body.strip())}\n\n"
        "## Run it\n\n"
        "From a clone of the repository, with the package installed "
        '(`pip install -e ".[examples]"` for the HuggingFace and CLIP tutorials):\n\n'
        f"```bash\npython usage_examples/{name}.py --help\n"
        f"python usage_examples/{name}.py --output-dir output\n```\n\n"
        f"## The script\n\n`usage_examples/{name}.py`:\n\n```python\n{source.rstrip()}\n```\n"
    )


def method_entries() -> str:
    """One mkdocstrings entry per exported CAM method (a BaseCAM subclass, or a method built on
    one such as FinerCAM), at the module that defines it."""
    import pytorch_grad_cam

    bases: tuple[type, ...] = (pytorch_grad_cam.BaseCAM,)
    try:
        from pytorch_grad_cam._composition import ComposedCAM

        bases += (ComposedCAM,)
    except ImportError:
        pass
    entries = []
    for name in sorted(pytorch_grad_cam.__all__):
        cls = getattr(pytorch_grad_cam, name)
        if isinstance(cls, type) and issubclass(cls, bases) and cls not in bases:
            entries.append(
                f"::: {cls.__module__}.{cls.__qualname__}\n"
                "    options:\n"
                "      members: false\n"
                "      show_root_full_path: false\n"
            )
    return "\n".join(entries)


def expand(markdown: str, page_path: str, docs_dir: Path) -> str:
    """The page's markdown with every directive replaced by what it names.

    A README section named like the page's title comes without its own heading.
    """
    title = re.search(r"^# (.+)$", markdown, re.M)

    def replace(match: re.Match[str]) -> str:
        kind, argument = match.group(1), (match.group(2) or "").strip()
        if kind == "readme":
            section = readme_section(argument)
            if title and title.group(1).strip() == argument:
                section = section.partition("\n")[2].lstrip("\n")
            return fix_links(section, page_path, docs_dir)
        if kind == "example":
            return example_page(argument)
        return method_entries()

    return DIRECTIVE.sub(replace, markdown)


def on_config(config: Any) -> Any:
    """MkDocs event: have griffe read ``Example:`` sections (the package's spelling, which the
    Google style allows) as examples, rendered as code, like ``Examples:``."""
    try:
        from griffe._internal.docstrings import google

        google._section_kind.setdefault("example", google.DocstringSectionKind.examples)
    except (ImportError, AttributeError):  # another griffe: "Example:" renders as a note
        pass
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: expand the directives of every page."""
    return expand(markdown, page.file.src_uri, Path(config["docs_dir"]))

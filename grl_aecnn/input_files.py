"""Reading the files a user hands over (configs, sweeps, profiles, indexes) into one-line errors.

`read_text` turns a missing file, a folder, an oversized file or invalid UTF-8 into a
BadFile naming the path. `load_yaml` is YAML with safe types only and nothing PyYAML lets
through silently:

PyYAML's safe loader keeps the last of two equal keys, expands aliases without limit (a few
hundred bytes can stand for gigabytes once validated or printed) and recurses once per
nesting level. Config files are small and flat, so this loader rejects duplicate keys and
caps the document's size, its aliases, its depth and its size once aliases are expanded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 256 * 1024
MAX_ALIASES = 64
MAX_DEPTH = 32
MAX_NODES = 100_000


class BadFile(ValueError):
    """A file that cannot be read as what it should be; the message names it and is one line."""


class YamlError(BadFile):
    """Text that is not a config YAML document."""


def read_text(path: str | Path, what: str, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``; BadFile otherwise."""
    path = Path(path)
    try:
        if not path.is_file():
            raise BadFile(f"{what} {path}: " + ("is a folder, expected a file" if path.is_dir() else "not found"))
        if path.stat().st_size > max_bytes:
            raise BadFile(f"{what} {path}: larger than {max_bytes // 1024} KiB")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadFile(f"{what} {path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise BadFile(f"{what} {path}: cannot be read ({err.strerror})") from None


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlError(f"more than {MAX_ALIASES} aliases (*name)")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YamlError(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise YamlError(f"aliases expand to more than {MAX_NODES} values")
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                raise YamlError(f"line {key_node.start_mark.line + 1}: a key must be a plain value") from None
            if duplicate:
                raise YamlError(f"line {key_node.start_mark.line + 1}: duplicate key {str(key)[:80]!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values in the document once every alias is expanded (memoised per shared node)."""
    if id(node) not in sizes:
        sizes[id(node)] = 1
        if isinstance(node, yaml.SequenceNode):
            sizes[id(node)] += sum(_expanded_size(child, sizes) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            sizes[id(node)] += sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    return sizes[id(node)]


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; YamlError (one line) on bad syntax, duplicate keys or caps exceeded."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"larger than {MAX_BYTES // 1024} KiB")
    if "\0" in text:
        raise YamlError("contains NUL characters")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlError(f"{where}{err.problem or err.context or 'invalid YAML'}") from None
    except yaml.YAMLError as err:
        raise YamlError(" ".join(str(err).split())[:200]) from None

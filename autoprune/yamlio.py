"""Plain documents: reading YAML the strict way (UTF-8 only, no duplicate keys, one-line
errors) and the content hash of a JSON-serialisable document (``stable_hash``).

PyYAML's ``safe_load`` silently keeps the last of two equal keys (``study: x`` then
``study: y``) and a file in another encoding fails with a long ``UnicodeDecodeError``
traceback. ``load_yaml_file`` refuses both with the file, line or byte position.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from autoprune.errors import ConfigError

__all__ = ["load_yaml_file", "load_yaml_text", "stable_hash", "MAX_VALUES"]

#: the most values a YAML document may expand to through its aliases (a study config holds a few hundred):
#: nine nested aliases of nine items each make 9^9 values from a 300-byte file (a "billion laughs")
MAX_VALUES = 100_000


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short content hash of a JSON-serialisable object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)  # resolves YAML merge keys (<<) first: a merged key may be overridden
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # SafeLoader itself reports unhashable keys
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(key, seen[key], line)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text; errors name ``source`` and the line.

    Raises:
        ConfigError: malformed YAML or a duplicate key.
    """
    loader = _UniqueKeyLoader(text)  # a SafeLoader subclass
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_VALUES:
            raise ConfigError(
                f"{source}: the document expands to more than {MAX_VALUES:,} values through its aliases (*name); "
                f"a study config is far smaller: write the values out, or use fewer aliases"
            )
        return loader.construct_document(node)
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{source}:{dup.again}: duplicate key '{dup.key}' (first given on line {dup.first}); "
            f"a key may appear once per mapping: remove one of them"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document holds once every alias is expanded (as ``json.dumps`` would write it),
    counted over the composed nodes without expanding anything; a recursive alias counts as too many."""
    sizes: dict[int, int] = {}
    too_many = MAX_VALUES + 1

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = too_many  # seen again before it is done: a recursive alias
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        for child in children:
            total = min(too_many, total + size(child))
        sizes[id(node)] = total
        return total

    return size(root)


def load_yaml_file(path: str | Path) -> Any:
    """Read a UTF-8 YAML file strictly (see the module docstring).

    Raises:
        ConfigError: missing file, non-UTF-8 bytes (with the byte position and line), malformed YAML, duplicate key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text: byte 0x{raw[err.start]:02x} at byte position {err.start} (line {line}); "
            f"save the file as UTF-8"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte-order mark some editors write
    return load_yaml_text(text, str(path))

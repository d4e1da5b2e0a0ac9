"""YAML documents that remember where each value was written, so errors can name the line.

pydantic reports a problem by its location in the data (``("codes", 2, "system")``); the analyst
editing the file needs a line number. The file is parsed once into PyYAML's node tree (whose nodes
carry marks) and built into plain data from that same tree; :meth:`YamlDocument.line_of` walks the
tree along a pydantic location.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import yaml


@dataclass(frozen=True, slots=True)
class YamlDocument:
    data: object
    root: yaml.Node | None

    def line_of(self, location: Sequence[int | str]) -> int | None:
        """The 1-based line of the value at ``location``, or of the nearest enclosing one.

        A missing key points at the mapping that should hold it; a key that should not be there
        points at that key; the top level is line 1.
        """
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in location:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                        line = key.start_mark.line + 1
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line


def parse_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with the safe loader, keeping its node tree; raises ``yaml.YAMLError``."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return YamlDocument(data, root)


def error_line(error: yaml.YAMLError) -> int | None:
    """The 1-based line a YAML syntax error points at, when PyYAML knows it."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    return mark.line + 1 if mark is not None else None

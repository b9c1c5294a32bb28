"""`canaryd schema`: the JSON Schema of the config file on stdout, for editors and CI linters.

The published copy is schema/canaryd.schema.json (a test keeps it equal to this output); a config
file points an editor at it with the modeline `# yaml-language-server: $schema=<path or URL>`.
"""

from __future__ import annotations

import argparse
import json

from ..config import json_schema


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="print the config's JSON Schema", description=__doc__)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
    return 0

"""Print the configuration reference as a Markdown table, generated from the config model
(`daemon/canaryd/config/model.py`) through the schema derived from it (`canaryd.config.config_reference`).

`python scripts/config_reference.py` prints it; the README holds the same table between the markers
`<!-- config-reference:start -->` and `<!-- config-reference:end -->`, and a test keeps them equal.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))

from canaryd.config import config_reference  # noqa: E402


def table() -> str:
    rows = ["| key | default | meaning and allowed values |", "| --- | --- | --- |"]
    for key, default, text in config_reference():
        cell = text.replace("|", "\\|")
        rows.append(f"| `{key}` | `{default}` | {cell} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())

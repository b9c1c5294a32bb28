"""Report pages: one self-contained HTML page per rollout (page.py), an index (index.py), chart helpers.

Pure: nothing here does I/O. The daemon serves the pages at /ui/, `canaryd analyze --report` writes one.
"""

"""The report: `ropd inspect`'s static HTML pages of a run or a bench.

- `inspect`: building the pages of a run or a bench; `records`: reading what a run wrote;
- `charts`: the charts, as inline SVG.

The Jinja2 templates, CSS and JS beside these modules are package data.
"""

__all__ = ["charts", "inspect", "records"]

"""The report: `ropd inspect`'s static HTML pages of a run or a bench.

- `inspect`: reading what a run or a bench wrote and building the pages;
- `charts`: the charts, as inline SVG.

The Jinja2 templates, CSS and JS beside these modules are package data.
"""

__all__ = ["charts", "inspect"]

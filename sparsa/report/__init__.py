"""Reports: results as JSON plus a self-contained HTML page with matplotlib figures."""

from sparsa.report.html import render_run, write_html_report

__all__ = ["render_run", "write_html_report"]

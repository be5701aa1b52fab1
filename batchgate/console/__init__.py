"""The web console (/console): server-rendered pages over the same core services as the
API, live updates with htmx, charts with uPlot (both vendored under static/vendor)."""

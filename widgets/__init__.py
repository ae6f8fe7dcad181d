"""ipywidgets + plotly views of workbench analyses (feature cards, browsers, maps) live here."""

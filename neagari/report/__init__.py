"""The paper page (Markdown + HTML from result files) and the figure helpers. May import every
subpackage but cli."""

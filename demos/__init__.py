"""One module per panel. Each exposes build(ctx): lay out components and wire events."""

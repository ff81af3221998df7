"""firesafe: smart fire-safety IoT monitoring platform (CLI, settings and process wiring)."""

__version__ = "0.1.0"

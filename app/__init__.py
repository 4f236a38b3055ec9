"""CharGPT Studio's desktop monitor: a thin PySide6 layer over the engine."""

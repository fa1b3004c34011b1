"""The bottom layer every stage may use: atomic file writes, the process group, memory
readings, argument checks and table formatting. It imports nothing else of the project."""

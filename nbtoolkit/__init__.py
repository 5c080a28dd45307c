"""nbtoolkit."""

"""Hostile guest images (built by guests/build.py from the sources in guests/hostile/)."""

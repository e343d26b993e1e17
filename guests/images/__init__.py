"""Built-in guest images (built by guests/build.py from the sources in guests/)."""

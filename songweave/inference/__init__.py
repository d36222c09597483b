"""Using a trained model: loading it, arranging two songs, exporting a release, the Python API."""

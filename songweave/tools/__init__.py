"""Checks of a whole machine (GPU check)."""

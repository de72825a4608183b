"""Scripts and helpers to run genq without containers (not part of the installed package)."""

"""The one place the tool's version is defined (setup.py and the metadata read it)."""
__version__ = "0.1.0"

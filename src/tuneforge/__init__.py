"""tuneforge: adapt pretrained language models to a domain, a task or a set of preferences."""

from tuneforge.quiet import silence_library_noise

__version__ = "0.1.0"

silence_library_noise()  # before any library is imported or used; see quiet.py

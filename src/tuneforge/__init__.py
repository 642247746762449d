"""tuneforge: adapt pretrained language models to a domain, a task or a set of preferences."""

__version__ = "0.1.0"

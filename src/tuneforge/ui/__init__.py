"""`tuneforge ui`: a local page to set up, check, preview, launch, watch, compare and try runs.

See docs/UI.md. ``app.create_app(UISettings)`` is the FastAPI app; the page is ``static/``.
"""

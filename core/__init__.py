"""UI-free layer of Model Workbench: model registry, inference, data handling.

Nothing in this package imports gradio; heavy libraries (torch, transformers) are imported
inside functions so that the web page is served before any model library is loaded.
"""

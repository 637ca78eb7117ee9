"""rs-demo: one Gradio app with a tab per rs-vlm model; ``rs-demo`` runs :func:`rs_demo.app.main`."""

__version__ = "0.1.0"

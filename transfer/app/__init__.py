"""`facegan serve`: a local web page over the trained models (the `app` extra, on Gradio).

`work` computes (no web framework), `ui` lays the tabs out, `serve` starts the server on the
loopback interface. It composes gan and attributes, so it lives in transfer.
"""

"""`textae serve`: an HTTP service over a textae export, torch-free (FastAPI + uvicorn + onnxruntime).

Needs the `serve` extra (`pip install "textae[serve]"`). Layout: settings.py (the options), schemas.py
(request/response bodies = the OpenAPI spec), limits.py (refusals and their error shape), batcher.py
(the inference thread and dynamic batching), service.py (one worker's model and batcher, and the typed
jobs requests ask of them), metrics.py (Prometheus), app.py (routes and lifespan), server.py (checks the
folder, then runs uvicorn).
"""

from textae.serve.settings import ServeSettings

__all__ = ["ServeSettings"]

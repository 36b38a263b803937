"""`tango-edge serve`: the cascade behind HTTP, speaking text-embeddings-inference's classification API.

Optional: needs the `[serve]` extra (FastAPI, uvicorn, prometheus-client).
"""

"""Serving a bundle over HTTP: ``state`` (loaded model, atomic reload) and ``http`` (FastAPI app).

``itemvec serve DIR`` builds the app with ``itemvec.serve.http.create_app``; a web explorer
module ``itemvec.serve.explorer`` exposing ``router`` is mounted automatically when present.
"""

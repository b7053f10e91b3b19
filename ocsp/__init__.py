"""OCSP: the pure responder (responder.py), status sources (sources.py), Flask blueprint (http.py)."""

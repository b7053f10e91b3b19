"""The HTTP side of every service: the WSGI app factory (app.py), the endpoint base the DER
protocols are served by (protocol.py), their endpoints (ocsp.py, tsa.py) and the repository of
CA certificates and CRLs (repository.py). The protocol packages (ocsp/, tsa/, and those to
come) hold the protocol itself and know nothing of HTTP; ``ca/`` neither."""

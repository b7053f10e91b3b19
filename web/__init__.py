"""The HTTP side shared by every protocol service: the WSGI app factory, the endpoint base
the DER protocols (OCSP, RFC 3161) are served by, and the repository of CA certificates and
CRLs. The protocol packages (ocsp/, tsa/, and the JSON APIs to come) put their own adapter in
their ``http.py`` over these pieces; ``ca/`` knows nothing of HTTP."""

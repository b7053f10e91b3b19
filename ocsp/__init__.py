"""OCSP: the pure responder (responder.py, requests.py, answers.py), where status comes from
(sources.py) and answers signed ahead of time (preproduce.py). Its HTTP endpoint is web/ocsp.py."""

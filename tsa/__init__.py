"""The RFC 3161 time-stamp authority: the pure core (core.py, requests.py, tokens.py) and how a
worker's unit is configured (config.py). Its HTTP endpoint is web/tsa.py."""

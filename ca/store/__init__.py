"""The CA's records: SQLAlchemy 2.0 models, query functions that take a Session, migrations.

Query functions never open sessions or commit: the service owns transaction boundaries.
"""

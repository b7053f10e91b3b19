"""The tincay commands, one module per group; cli.main registers each command on the root group.

A service that brings commands adds one module here and one ``cli.add_command`` line in
cli/main.py. The modules build on cli.shell and keep their heavy imports inside the commands,
so ``tincay profiles list`` touches neither the database nor the HSM.
"""

"""The ``campusguard`` command: one module per subcommand."""

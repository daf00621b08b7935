"""One module per `echofm` sub-command: `add_parser(subparsers)` and `run(args) -> int`.

Command modules parse arguments and call into the core library (or a flow); they hold no
pipeline logic of their own.
"""
